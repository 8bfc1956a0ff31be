"""A supervisor killed with SIGKILL while a server is stopped (SIGSTOP, which the parent-death SIGTERM does not end)
leaves that server holding its port; the next stack with the same state folder ends it and serves."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from hearth_common.procs import free_port
from models.demo.data import ITEMS
from testkit.stack import DEMO, StackProcess, alive, demo_models_missing

pytestmark = pytest.mark.slow


def test_next_start_ends_what_a_killed_stack_left(tmp_path: Path) -> None:
    reason = demo_models_missing()
    if reason:
        pytest.skip(reason)
    router, server = free_port(), free_port()
    path = tmp_path / "stack.toml"
    path.write_text(
        f'[router]\nport = {router}\n[[models]]\nname = "demo-think"\nsource = "{DEMO / "demo-think"}"\n'
        f"port = {server}\nctx_size = 512\nthreads = 1\n"
    )
    state = tmp_path / "state"
    first = StackProcess([str(path)], state)
    before = first.state()
    orphan = before["servers"][0]["pid"]
    second: StackProcess | None = None
    try:
        os.kill(orphan, signal.SIGSTOP)
        assert first.proc is not None
        first.proc.kill()  # the supervisor: no chance to stop its children
        first.proc.wait()
        deadline = time.monotonic() + 30
        while alive(before["router"]["pid"]):  # the router ends on the parent-death SIGTERM
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert alive(orphan)  # stopped: it holds its port

        second = StackProcess([str(path)], state)
        assert not alive(orphan)
        assert "ending what the last stack" in second.console()
        r = httpx.post(
            second.api + "/chat/completions",
            timeout=60,
            json={
                "model": "demo-think",
                "messages": [{"role": "user", "content": ITEMS[0].question}],
                "temperature": 0,
            },
        )
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == ITEMS[0].answer
    finally:
        if second is not None:
            second.stop()
        first.close()
        if alive(orphan):
            with contextlib.suppress(ProcessLookupError):
                os.kill(orphan, signal.SIGKILL)
