"""Real `python -m serve` servers and `python -m route` routers on loopback for the serve tests (testkit.procs).
Their logs go to .cache/serve/{server,router}-PORT.log; a failure inside the `with` block shows the log's end."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

from hearth_common.procs import free_port
from testkit.procs import ServerProcess

REPO = Path(__file__).resolve().parents[1]
LOGS = REPO / ".cache" / "serve"


class Server(str):
    """The server's base URL, which also knows its process."""

    process: ServerProcess

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        assert self.process.proc is not None
        return self.process.proc

    def interrupt(self) -> None:
        self.proc.send_signal(signal.SIGINT)


@contextlib.contextmanager
def _running(
    module: str,
    args: tuple[str, ...],
    port: int,
    ready_status: int | None,
    timeout: float,
    env: Mapping[str, str] | None,
) -> Iterator[Server]:
    url = f"http://127.0.0.1:{port}"
    with ServerProcess.module(
        module,
        *args,
        ready_url=url + "/health",
        ready_status=ready_status,
        env=env,
        log=LOGS / f"{'server' if module == 'serve' else 'router'}-{port}.log",
        ready_timeout=timeout,
    ) as process:
        server = Server(url)
        server.process = process
        yield server


def running_server(*args: str, timeout: float = 60) -> contextlib.AbstractContextManager[Server]:
    """`python -m serve ARGS --port P --threads 1`, ready once /health answers 200; Ctrl-C afterwards."""
    port = free_port()
    return _running("serve", (*args, "--port", str(port), "--threads", "1"), port, 200, timeout, None)


def running_router(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 60
) -> contextlib.AbstractContextManager[Server]:
    """`python -m route --port P ARGS` (`env` over ours), ready once it answers /health at all (503 until a backend
    is healthy); Ctrl-C afterwards."""
    port = free_port()
    return _running("route", ("--port", str(port), *args), port, None, timeout, {**os.environ, **(env or {})})
