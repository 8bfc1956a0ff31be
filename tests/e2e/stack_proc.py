"""`python -m stack` as a real process for the end-to-end tests: start, read its state file, stop, check for orphans."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "models" / "demo"


def demo_models_missing() -> str | None:
    missing = [n for n in ("demo-think", "demo-harmony") if not (DEMO / n / "config.json").is_file()]
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


class StackProcess:
    def __init__(self, args: list[str], state_dir: Path, ready_timeout: float = 240.0) -> None:
        self.state_dir = state_dir
        self.orphans: list[int] = []
        state_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = state_dir / "stack-console.log"
        self.log = self.log_path.open("w")
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stack", *args, "--state-dir", str(state_dir)],
            cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + ready_timeout
        while "stack: ready" not in self.console():
            if self.proc.poll() is not None:
                raise RuntimeError(f"stack exited with {self.proc.returncode}:\n{self.console()[-3000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"stack not ready in {ready_timeout} s:\n{self.console()[-3000:]}")
            time.sleep(0.2)
        self.state_at_start = self.state()
        self.api = self.state_at_start["api"]
        self.router = self.state_at_start["router"]["url"]
        keys = Path(self.state_at_start["keys"])
        # The router's cluster API (/status, /backends, /metrics) needs the admin key the stack made; a model
        # server's /v1 needs the backend key.
        self.admin = {"Authorization": f"Bearer {(keys / 'admin.key').read_text().strip()}"}
        self.backend_auth = {"Authorization": f"Bearer {(keys / 'backend.key').read_text().strip()}"}

    def console(self) -> str:
        return self.log_path.read_text(errors="replace")

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

    def stop(self, timeout: float = 40.0) -> int:
        """SIGINT, as Ctrl-C; returns the exit code. Kills what is left if it does not stop in time."""
        pids = self.pids() if (self.state_dir / "state.json").exists() else []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        time.sleep(0.2)
        self.orphans = [pid for pid in pids if alive(pid)]
        for pid in self.orphans:  # a failed test must not leave servers behind either
            os.kill(pid, signal.SIGKILL)
        return self.proc.returncode
