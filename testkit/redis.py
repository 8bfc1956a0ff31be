"""A real redis-server on a free loopback port for the shared-state tests and the cluster benchmark: nothing saved
to disk, stopped afterwards, restartable on the same port (empty again, as a Redis without persistence comes back).

    with RedisServer() as redis:          # skips the test (pytest) when there is no redis-server: `just redis`
        url = redis.url                   # redis://127.0.0.1:PORT/0
        redis.stop(); redis.start()
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from types import TracebackType

from hearth_common.procs import free_port


def redis_missing() -> str | None:
    """Why the shared-state tests cannot run here, or None."""
    return None if shutil.which("redis-server") else "no redis-server (`just redis` installs Debian's)"


class RedisServer:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError(redis_missing())
        argv = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout:g} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
