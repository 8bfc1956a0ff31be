"""The supervisor's pure parts: backoff, and the process table it builds from a stack file (no process started)."""

from __future__ import annotations

import json
from pathlib import Path

from stack.child import backoff
from stack.config import parse_stack
from stack.supervise import Supervisor


def test_backoff_doubles_up_to_30_s() -> None:
    assert [backoff(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]


def test_process_table(tmp_path: Path) -> None:
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    stack = parse_stack(
        {
            "router": {"port": 9000, "admin_key": "adm"},
            "models": [
                {"name": "a", "aliases": ["x"], "source": "m.gguf", "port": 9100, "replicas": 3, "threads": 1},
                {"name": "b", "source": "m.gguf", "model_type": "gpt-oss"},
            ],
        },
        tmp_path,
    )
    gguf = tmp_path / "m.gguf"
    sup = Supervisor(stack, {"a": gguf, "b": gguf}, {"a": "qwen", "b": "gpt-oss"}, {"a": 2, "b": 0}, tmp_path / "state")
    assert [c.name for c in sup.servers] == ["a-1", "a-2", "a-3", "b"]
    assert [c.url for c in sup.servers[:3]] == [f"http://127.0.0.1:{p}" for p in (9100, 9101, 9102)]
    assert sup.servers[0].model is not None and sup.servers[0].model.names == ["a", "x"]
    argv = sup.servers[0].argv
    assert argv[argv.index("--n-gpu-layers") + 1] == "2" and argv[argv.index("--threads") + 1] == "1"
    assert argv[argv.index("--model-path") + 1] == str(gguf)
    assert "--model-type" in sup.servers[3].argv and "--model-type" not in argv
    assert sup.api_url == "http://127.0.0.1:9000/v1"
    config = tmp_path / "state" / "router.toml"
    assert config.stat().st_mode & 0o077 == 0  # it holds the admin key
    sup.write_state()
    state = json.loads((tmp_path / "state" / "state.json").read_text())
    assert [s["status"] for s in state["servers"]] == ["starting"] * 4 and state["api"] == sup.api_url


def test_keys_reach_children_through_their_environment_only(tmp_path: Path) -> None:
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    stack = parse_stack(
        {
            "router": {"port": 9000, "api_key": "sk-client"},
            "models": [{"name": "a", "source": "m.gguf", "replicas": 2}],
        },
        tmp_path,
    )
    state = tmp_path / "state"
    sup = Supervisor(stack, {"a": tmp_path / "m.gguf"}, {"a": "qwen"}, {"a": 0}, state)
    keys = state / "keys"
    admin, backend = (keys / "admin.key").read_text().strip(), (keys / "backend.key").read_text().strip()
    assert len(admin) >= 32 and len(backend) >= 32 and admin != backend  # made at start: none in the stack file
    assert keys.stat().st_mode & 0o777 == 0o700 and (state / "logs").stat().st_mode & 0o777 == 0o700
    assert all((keys / k).stat().st_mode & 0o777 == 0o600 for k in ("admin.key", "backend.key"))
    assert sup.router.env == {
        "HEARTH_ROUTE_ADMIN_KEY": admin,
        "HEARTH_ROUTE_BACKEND_KEY": backend,
        "HEARTH_ROUTE_API_KEY": "sk-client",
    }
    assert all(c.env == {"HEARTH_SERVE_API_KEY": backend} for c in sup.servers)  # the client's key is not theirs
    secrets = (admin, backend, "sk-client")
    for child in (sup.router, *sup.servers):
        assert not any(s in " ".join(child.argv) for s in secrets)
    sup.write_state()
    written = (state / "state.json").read_text() + (state / "router.toml").read_text()
    assert not any(s in written for s in secrets)

    from stack.__main__ import banner

    assert not any(s in banner(sup) for s in secrets) and "$HEARTH_API_KEY" in banner(sup)


def test_child_logs_are_owner_only(tmp_path: Path) -> None:
    import asyncio
    import sys

    from stack.child import Child, spawn as spawn_child

    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    stack = parse_stack({"models": [{"name": "a", "source": "m.gguf"}]}, tmp_path)
    sup = Supervisor(stack, {"a": tmp_path / "m.gguf"}, {"a": "qwen"}, {"a": 0}, tmp_path / "state")
    log = tmp_path / "state" / "logs" / "x.log"
    log.write_text("an old log, world-readable\n")
    log.chmod(0o644)
    child = Child(
        "x",
        [sys.executable, "-c", "import os; print(os.environ['HEARTH_X'])"],
        "http://127.0.0.1:1",
        "/",
        log,
        env={"HEARTH_X": "from-env"},
    )

    async def spawn() -> None:
        await spawn_child(child, sup.child_env(child))
        assert child.proc is not None
        await child.proc.wait()

    asyncio.run(spawn())
    assert log.stat().st_mode & 0o777 == 0o600 and "from-env" in log.read_text()


def test_a_stack_file_with_a_key_must_be_owner_only(tmp_path: Path) -> None:
    import pytest

    from stack.config import load_stack
    from stack.errors import ConfigError

    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    path = tmp_path / "stack.toml"
    path.write_text('[router]\napi_key = "sk"\n[[models]]\nname = "a"\nsource = "m.gguf"\n')
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_stack(path)
    path.chmod(0o600)
    assert load_stack(path).router.api_key == "sk"
    key = tmp_path / "api.key"
    key.write_text("sk-file\n")
    key.chmod(0o600)
    path.write_text('[router]\napi_key_file = "api.key"\n[[models]]\nname = "a"\nsource = "m.gguf"\n')
    path.chmod(0o644)  # no key in it: readable is fine
    assert load_stack(path).router.api_key == "sk-file"
