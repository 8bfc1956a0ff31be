"""The stack file's health timing is what the stack does: with [router] health_interval = 1, health_timeout = 1 and
hang_checks = 2, a SIGSTOPped server is out of the router's rotation and restarted by the supervisor within the
bound stack/child.Checks states (plus the first restart's 1 s backoff)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from stack.child import Checks, backoff
from testkit.stack import DEMO, StackProcess, demo_models_missing

pytestmark = pytest.mark.slow
SLACK = 2.0  # seconds for the state file, the poll and a loaded machine


def hang_and_time(stack: StackProcess, victim: str) -> tuple[float, float]:
    """SIGSTOP the victim; (seconds until the router has it unhealthy, seconds until a new process runs)."""
    before = stack.server(victim)
    t0 = time.monotonic()
    os.kill(before["pid"], signal.SIGSTOP)
    out = restarted = None
    try:
        while restarted is None:
            assert time.monotonic() - t0 < 120, "the hung server was not restarted"
            if out is None:
                status = httpx.get(stack.router + "/status", headers=stack.admin, timeout=5).json()
                if not next(b for b in status["backends"] if b["name"] == victim)["healthy"]:
                    out = time.monotonic() - t0
            if stack.server(victim)["pid"] != before["pid"]:
                restarted = time.monotonic() - t0
            time.sleep(0.05)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(before["pid"], signal.SIGCONT)
    return out if out is not None else restarted, restarted


def test_configured_hang_check_is_honoured(tmp_path: Path) -> None:
    reason = demo_models_missing()
    if reason:
        pytest.skip(reason)
    path = tmp_path / "stack.toml"
    path.write_text(
        "[router]\nport = 0\nhealth_interval = 1\nhealth_timeout = 1\nhang_checks = 2\n"
        f'[[models]]\nname = "demo-think"\nsource = "{DEMO / "demo-think"}"\nctx_size = 512\nthreads = 1\n'
    )
    stack = StackProcess([str(path)], tmp_path / "state")
    try:
        stack.wait_healthy()
        out, restarted = hang_and_time(stack, "demo-think")
        bound = Checks(every=1, timeout=1, misses=2).bound() + backoff(1)
        print(
            f"\nhung server out of rotation after {out:.1f} s, restarted after {restarted:.1f} s (bound {bound:.0f} s)"
        )
        assert restarted <= bound + SLACK
        assert "demo-think has not answered /health for 2 checks" in stack.console()
        stack.wait_healthy(timeout=60)
    finally:
        stack.stop()
