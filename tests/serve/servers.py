"""Real `python -m serve` processes on loopback for integration tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from stack.supervise import free_port

REPO = Path(__file__).resolve().parents[2]


class Server(str):
    """The server's base URL, which can also interrupt its process."""

    proc: subprocess.Popen

    def interrupt(self) -> None:
        self.proc.send_signal(signal.SIGINT)


@contextlib.contextmanager
def running_server(*args: str, timeout: float = 60) -> Iterator[Server]:
    """Start `python -m serve ARGS --port P`, wait for /health 200, yield its URL; SIGINT it afterwards."""
    port = free_port()
    (REPO / ".cache" / "serve").mkdir(parents=True, exist_ok=True)
    log = open(REPO / ".cache" / "serve" / f"server-{port}.log", "w")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "serve", *args, "--port", str(port), "--threads", "1"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = Server(f"http://127.0.0.1:{port}")
    url.proc = proc
    try:
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}: {Path(log.name).read_text()[-2000:]}")
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.time() > deadline:
                raise RuntimeError("server did not become healthy")
            time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
