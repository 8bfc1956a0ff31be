"""A conversion killed half-way leaves no .gguf; SIGTERM/Ctrl-C also remove the temporary file; the next run
cleans up what a SIGKILL left and converts normally."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testkit.fixtures.synthetic import write_synthetic

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Large enough (about 80 MB of bf16) that a q8_0 conversion takes a second or more."""
    return write_synthetic(tmp_path_factory.mktemp("big") / "model", hidden=512, layers=4, vocab=32000, ff=1536)


def start(src: Path, out: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "convert", str(src), str(out), "--type", "q8_0", "--quiet"]
    return subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)


def wait_for_partial(folder: Path, proc: subprocess.Popen[str], min_bytes: int = 1 << 20) -> Path:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for p in folder.iterdir():
            if ".tmp-" in p.name and p.stat().st_size >= min_bytes:
                return p
        assert proc.poll() is None, "conversion finished before it could be interrupted"
        time.sleep(0.01)
    raise AssertionError("no partial file appeared")


def test_sigkill_mid_write_leaves_no_gguf(big: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.gguf"
    proc = start(big, out)
    partial = wait_for_partial(tmp_path, proc)
    proc.kill()
    proc.wait(timeout=30)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".gguf")]
    assert partial.exists()  # SIGKILL cannot be caught: the hidden partial file stays...
    proc = start(big, out)
    assert proc.wait(timeout=300) == 0, proc.stderr.read() if proc.stderr else ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.gguf"]  # ...until the next run removes it
    assert out.read_bytes()[:4] == b"GGUF"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_remove_the_partial_file(big: Path, tmp_path: Path, sig: signal.Signals) -> None:
    out = tmp_path / "model.gguf"
    proc = start(big, out)
    wait_for_partial(tmp_path, proc)
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == 130
    assert "Traceback" not in (proc.stderr.read() if proc.stderr else "")
    assert list(tmp_path.iterdir()) == []
