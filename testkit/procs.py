"""Server processes on loopback for the tests and benchmarks: one helper to start one, wait until it is ready, restart
it and stop it (a signal, then SIGKILL after a grace period), with its output in a log file that failures show."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self
from urllib.parse import urlsplit

import httpx

from hearth_common.procs import CODE_ROOT, child_env

__all__ = ["ProcessError", "ServerProcess", "http_status"]
TAIL = 3000  # characters of a log shown with a failure


def http_status(url: str, headers: Mapping[str, str] | None = None, timeout: float = 1.0) -> int | None:
    """The status of GET `url`, or None when nothing answers (refused, reset, timed out)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout)
    try:
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn.request("GET", path, headers=dict(headers or {}))
        return conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


class ProcessError(RuntimeError):
    """A server process exited or did not get ready; the message ends with its log's last lines."""


class ServerProcess:
    """One server process. Ready when `ready_url` answers `ready_status` (None: any HTTP answer) and, with
    `ready_line`, its log holds that text. The log (stdout and stderr) goes to `log` (emptied at the first start,
    appended across restarts) or to an unnamed temporary file; `log_text()` is what it wrote since its last start.

        with ServerProcess([sys.executable, "-m", "serve", "--port", str(port)],
                           ready_url=f"http://127.0.0.1:{port}/health") as server:
            ...                                   # a failure in here gets the log's tail as a note

    `ServerProcess.module("serve", ...)` runs one of ours from this checkout (or the installed wheel)."""

    def __init__(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        ready_url: str | None = None,
        ready_status: int | None = 200,
        ready_headers: Mapping[str, str] | None = None,
        ready_line: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        log: Path | None = None,
        label: str | None = None,
        ready_timeout: float = 60.0,
        grace: float = 15.0,
    ) -> None:
        self.argv = [os.fspath(a) for a in argv]
        self.ready_url, self.ready_status, self.ready_line = ready_url, ready_status, ready_line
        self.ready_headers = dict(ready_headers or {})
        self.env = dict(env) if env is not None else None
        self.cwd, self.log_path = cwd, log
        self.label = label or (self.argv[2] if self.argv[1:2] == ["-m"] else Path(self.argv[0]).name)
        self.ready_timeout, self.grace = ready_timeout, grace
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_start = 0

    @classmethod
    def module(
        cls, module: str, *args: str | os.PathLike[str], env: Mapping[str, str] | None = None, **kwargs: Any
    ) -> ServerProcess:
        """`python -m MODULE ARGS` run from the folder holding our packages, with `child_env(env)`."""
        return cls(
            [sys.executable, "-m", module, *args],
            env=child_env(os.environ if env is None else env),
            cwd=CODE_ROOT,
            label=kwargs.pop("label", None) or module,
            **kwargs,  # the constructor's own keywords (ready_url, log, ...)
        )

    # -- life ------------------------------------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.label} was never started"
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float | None = None) -> Self:
        """Start it and wait until it is ready; ProcessError (with the log's tail) if it exits or times out."""
        if self.running():
            raise ProcessError(f"{self.label} is already running (pid {self.pid})")
        if self._log is None:
            # appending: the child's writes never land where a read left the shared offset
            if self.log_path is None:
                self._log = tempfile.TemporaryFile(mode="a+b")  # noqa: SIM115 (open across starts, closed by close())
            else:
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
                self.log_path.write_bytes(b"")  # a named log holds this object's runs only
                self._log = self.log_path.open("a+b")
        self._log_start = os.fstat(self._log.fileno()).st_size
        self.proc = subprocess.Popen(
            self.argv, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )
        self.wait_ready(timeout)
        return self

    def is_ready(self) -> bool:
        if self.ready_line is not None and self.ready_line not in self.log_text():
            return False
        if self.ready_url is not None:
            status = http_status(self.ready_url, self.ready_headers)
            return status is not None and self.ready_status in (None, status)
        return True

    def wait_ready(self, timeout: float | None = None) -> None:
        timeout = self.ready_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while not self.is_ready():
            if not self.running():
                raise ProcessError(f"{self.label} exited with {self.returncode} before it was ready{self.tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise ProcessError(f"{self.label} was not ready within {timeout:g} s{self.tail()}")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGINT, grace: float | None = None) -> int | None:
        """`sig` (Ctrl-C by default), then SIGKILL if it has not exited after `grace` seconds; its exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(self.grace if grace is None else grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> int | None:
        """SIGKILL, no grace: a crash, or a quick cleanup."""
        return self.stop(signal.SIGKILL, grace=30)

    def restart(self, graceful: bool = False, timeout: float | None = None) -> Self:
        """Stop (SIGKILL, or `stop()` when graceful) and start again with the same command, port and log."""
        self.stop() if graceful else self.kill()
        return self.start(timeout)

    def close(self) -> None:
        """Stop it and close the log (a named log file stays)."""
        self.stop()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        return self if self.running() else self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is not None and self._log is not None:
            exc.add_note(f"{self.label}'s output:{self.tail()}")
        self.close()

    # -- log -------------------------------------------------------------------------------------------------------

    def log_text(self, since_start: bool = True) -> str:
        """What it wrote (stdout and stderr) since its last start, or in all its runs; a named log also after
        `close()`."""
        start = self._log_start if since_start else 0
        if self._log is None:
            if self.log_path is None or not self.log_path.exists():
                return ""
            return self.log_path.read_bytes()[start:].decode(errors="replace")
        fd = self._log.fileno()
        size = os.fstat(fd).st_size
        return os.pread(fd, max(size - start, 0), start).decode(errors="replace")  # pread: the offset stays

    def tail(self, chars: int = TAIL) -> str:
        """The end of the log, as a failure message's last part."""
        where = f" ({self.log_path})" if self.log_path else ""
        return f"\n--- last output{where} ---\n{self.log_text()[-chars:]}"


def wait_until(predicate: Callable[[], object], timeout: float = 30.0, every: float = 0.1) -> bool:
    """Poll `predicate` until it holds, once more at the deadline; a connection refused or reset on the way counts
    as "not yet"."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return True
        except httpx.TransportError:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(every)
