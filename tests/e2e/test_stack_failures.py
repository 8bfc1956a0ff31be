"""A stack that cannot come up says why in one place and leaves nothing running."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest

from hearth_common.procs import CODE_ROOT, child_env
from testkit.stack import alive

pytestmark = pytest.mark.slow


def unloadable_gguf(path: Path) -> Path:
    """Valid GGUF metadata for a one-layer llama whose tensors are missing: llama.cpp refuses to load it."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_embedding_length(8)
    writer.add_head_count(1)
    writer.add_context_length(64)
    writer.add_tensor("token_embd.weight", np.zeros((16, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def run_stack(tmp_path: Path, source: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    stack = tmp_path / "stack.toml"
    stack.write_text(f'[router]\nport = 0\n[[models]]\nname = "broken"\nsource = "{source}"\nthreads = 1\n')
    state = tmp_path / "state"
    out = subprocess.run(
        [sys.executable, "-m", "stack", str(stack), "--state-dir", str(state)],
        cwd=CODE_ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    return out, state


def test_model_that_fails_to_load_stops_the_stack(tmp_path: Path) -> None:
    import json

    out, state = run_stack(tmp_path, unloadable_gguf(tmp_path / "broken.gguf"))
    assert out.returncode == 2, out.stdout + out.stderr
    assert "stack: broken did not start" in out.stderr and "Traceback" not in out.stderr
    snapshot = json.loads((state / "state.json").read_text())
    pids = [snapshot["router"]["pid"], *(s["pid"] for s in snapshot["servers"])]
    assert all(p and not alive(p) for p in pids)  # the router that had started is gone too
    assert {s["status"] for s in snapshot["servers"]} == {"stopped"}


def test_file_that_is_not_gguf_is_refused_before_anything_starts(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf at all" * 100)
    out, state = run_stack(tmp_path, bad)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "broken:" in out.stderr and "not a readable GGUF" in out.stderr
    assert not (state / "state.json").exists()
