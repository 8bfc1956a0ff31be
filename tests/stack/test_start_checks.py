"""Start-up checks of `python -m stack` as a real process: a folder it cannot write and a port something else holds
are one-line errors with exit 2, before any model is converted or any process started.

An unwritable folder here is a path under a regular file (HEARTH_CACHE=FILE/sub): mkdir fails with ENOTDIR for every
user, root included, where chmod 500 would not stop root (the tests may run as root)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from hearth_common.procs import CODE_ROOT, child_env
from testkit.stack import DEMO


def run(
    args: list[str], environ: dict[str, str] | None = None, module: str = "stack"
) -> subprocess.CompletedProcess[str]:
    env = child_env({**os.environ, **(environ or {})})
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=CODE_ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def one_line(out: subprocess.CompletedProcess[str], prefix: str) -> str:
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.startswith(f"{prefix}: ")]
    assert len(lines) == 1, out.stderr
    return lines[0]


def gguf_stack(tmp_path: Path, router: str = "port = 0", model: str = "") -> Path:
    (tmp_path / "m.gguf").write_bytes(b"GGUF")  # never read: the checks come first
    path = tmp_path / "stack.toml"
    path.write_text(f'[router]\n{router}\n[[models]]\nname = "a"\nsource = "m.gguf"\n{model}\n')
    return path


def test_unwritable_conversion_cache(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    cache = tmp_path / "file" / "sub"
    stack = tmp_path / "stack.toml"
    stack.write_text(f'[router]\nport = 0\n[[models]]\nname = "a"\nsource = "{DEMO / "demo-think"}"\n')
    out = run([str(stack), "--state-dir", str(tmp_path / "state")], {"HEARTH_CACHE": str(cache)})
    line = one_line(out, "stack")
    assert f"the conversion cache {cache / 'gguf'}" in line and "Not a directory" in line


def test_unwritable_conversion_cache_serve(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    cache = tmp_path / "file" / "sub"
    out = run(["--model-path", str(DEMO / "demo-think"), "--port", "0"], {"HEARTH_CACHE": str(cache)}, "serve")
    assert str(cache / "gguf") in one_line(out, "serve")


def test_unwritable_state_folder(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    state = tmp_path / "file" / "sub"
    out = run([str(gguf_stack(tmp_path)), "--state-dir", str(state)])
    assert f"the state folder {state}" in one_line(out, "stack")


def test_port_held_by_another_process(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        out = run([str(gguf_stack(tmp_path, f"port = {port}")), "--state-dir", str(tmp_path / "state")])
        line = one_line(out, "stack")
        assert f"port {port} (the router) is in use by pid {os.getpid()}" in line
        out = run([str(gguf_stack(tmp_path, model=f"port = {port}")), "--state-dir", str(tmp_path / "state")])
        assert f"port {port} (model a) is in use by pid {os.getpid()}" in one_line(out, "stack")
    assert not (tmp_path / "state" / "state.json").exists()  # nothing started
