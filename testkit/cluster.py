"""Real processes of a cluster for the end-to-end tests: routers sharing state in Redis (`python -m route
--shared-state`) that take nodes, and nodes (`python -m stack --node`) on loopback addresses 127.0.0.2, 127.0.0.3, ...

    with RedisServer() as redis:
        router = RouterProcess(redis.url, tmp / "r1.log").start()
        node = NodeProcess(stack_file, "127.0.0.2", [router.url], tmp / "a").start()
        node.kill_all()                      # the machine dies: the node and its model servers, SIGKILL
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from hearth_common.procs import CODE_ROOT, child_env, free_port
from testkit.procs import ServerProcess

ADMIN_KEY = "a" * 32
NODE_KEY = "n" * 32
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


class RouterProcess(ServerProcess):
    """`python -m route` on a free port, sharing state at `shared_state`, taking nodes with NODE_KEY."""

    def __init__(self, shared_state: str, log: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "HEARTH_ROUTE_ADMIN_KEY": ADMIN_KEY, "HEARTH_ROUTE_NODE_KEY": NODE_KEY}
        argv = ["--port", str(self.port), "--shared-state", shared_state, "--allow-backend-hosts", "127.0.0.0/8"]
        super().__init__(
            [sys.executable, "-m", "route", *argv, *args],
            env=child_env(env),
            cwd=CODE_ROOT,
            ready_url=self.url + "/v1/models",
            log=log,
            label=f"router :{self.port}",
        )


class NodeProcess(ServerProcess):
    """`python -m stack --node STACK_FILE --host HOST --join ...`, its state in `state_dir`, ready once it has
    joined (or tried to join) every router."""

    def __init__(self, stack_file: Path, host: str, join: list[str], state_dir: Path, key: str = NODE_KEY) -> None:
        self.host, self.state_dir = host, state_dir
        argv = [str(stack_file), "--node", "--host", host, "--state-dir", str(state_dir)]
        for url in join:
            argv += ["--join", url]
        super().__init__(
            [sys.executable, "-m", "stack", *argv],
            env=child_env({**os.environ, "HEARTH_NODE_KEY": key}),
            cwd=CODE_ROOT,
            ready_line="ready: control API at",
            log=state_dir / "node-console.log",
            label=f"node {host}",
            ready_timeout=120,
            grace=30,
        )

    def state(self) -> dict[str, Any]:
        return json.loads((self.state_dir / "state.json").read_text())

    def server_pids(self) -> list[int]:
        return [s["pid"] for s in self.state()["servers"] if s["pid"]]

    def kill_all(self) -> None:
        """SIGKILL the node and every model server it runs (each in its own process group): the machine is gone."""
        pids = self.server_pids()
        self.kill()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
