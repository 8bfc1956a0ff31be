"""The supervisor's pure parts: backoff, and the process table it builds from a stack file (no process started)."""

from __future__ import annotations

import json
from pathlib import Path

from stack.config import parse_stack
from stack.supervise import Supervisor, backoff


def test_backoff_doubles_up_to_30_s() -> None:
    assert [backoff(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]


def test_process_table(tmp_path: Path) -> None:
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    stack = parse_stack({
        "router": {"port": 9000, "admin_key": "adm"},
        "models": [
            {"name": "a", "aliases": ["x"], "source": "m.gguf", "port": 9100, "replicas": 3, "threads": 1},
            {"name": "b", "source": "m.gguf", "model_type": "gpt-oss"},
        ],
    }, tmp_path)
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
