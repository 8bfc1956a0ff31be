"""`python -m stack` as a real process for the end-to-end tests and benchmarks: started until its console says ready,
its state file read, stopped with Ctrl-C, and any server it left behind found and killed."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from hearth_common.paths import demo_dir
from hearth_common.procs import CODE_ROOT, child_env
from testkit.procs import ProcessError, ServerProcess

DEMO = demo_dir()


def demo_models_missing() -> str | None:
    missing = [n for n in ("demo-think", "demo-harmony", "demo-vision") if not (DEMO / n / "config.json").is_file()]
    # demo-vision trains with its own script (python -m models.demo.vision)
    return f"demo checkpoints not built yet: {', '.join(missing)} (python -m models.demo.train)" if missing else None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] != "Z"
    except OSError:
        return False


class StackProcess(ServerProcess):
    """The stack with `args` and its state in `state_dir`, started (ready) on construction; its console is
    `log_text()` (also `state_dir/stack-console.log`)."""

    def __init__(self, args: list[str], state_dir: Path, ready_timeout: float = 240.0) -> None:
        self.state_dir = state_dir
        self.orphans: list[int] = []
        state_dir.mkdir(parents=True, exist_ok=True)
        super().__init__(
            [sys.executable, "-m", "stack", *args, "--state-dir", str(state_dir)],
            env=child_env(),
            cwd=CODE_ROOT,
            ready_line="stack: ready",
            log=state_dir / "stack-console.log",
            label="stack",
            ready_timeout=ready_timeout,
            grace=40,
        )
        try:
            self.start()
        except ProcessError:
            self.close()  # and whatever servers it had started
            raise
        self.state_at_start = self.state()
        self.api = self.state_at_start["api"]
        self.router = self.state_at_start["router"]["url"]
        keys = Path(self.state_at_start["keys"])
        # The router's cluster API (/status, /backends, /metrics) needs the admin key the stack made; a model
        # server's /v1 needs the backend key.
        self.admin = {"Authorization": f"Bearer {(keys / 'admin.key').read_text().strip()}"}
        self.backend_auth = {"Authorization": f"Bearer {(keys / 'backend.key').read_text().strip()}"}

    def console(self) -> str:
        return self.log_text()

    def state(self) -> dict[str, Any]:
        return json.loads((self.state_dir / "state.json").read_text())

    def pids(self) -> list[int]:
        state = self.state()
        return [p for p in [state["router"]["pid"], *(s["pid"] for s in state["servers"])] if p]

    def server(self, name: str) -> dict[str, Any]:
        return next(s for s in self.state()["servers"] if s["name"] == name)

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Every server healthy in the supervisor's state and at the router, with nothing in flight."""
        deadline = time.monotonic() + timeout
        while True:
            servers = self.state()["servers"]
            status = httpx.get(self.router + "/status", headers=self.admin, timeout=5).json()
            backends = {b["name"]: b for b in status["backends"]}
            ok = all(s["status"] == "healthy" for s in servers) and all(
                backends.get(s["name"], {}).get("healthy") and backends[s["name"]]["active"] == 0 for s in servers
            )
            if ok:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"not all healthy and idle: {servers} / {status['backends']}")
            time.sleep(0.2)

    def stop(self, sig: int = signal.SIGINT, grace: float | None = None) -> int | None:
        """Ctrl-C (by default) and its exit status; then SIGKILL to any server it left behind (listed in `orphans`),
        so a failed test leaves nothing running either."""
        pids = self.pids() if (self.state_dir / "state.json").exists() else []
        code = super().stop(sig, grace)
        time.sleep(0.2)
        self.orphans = [pid for pid in pids if alive(pid)]
        for pid in self.orphans:
            os.kill(pid, signal.SIGKILL)
        return code
