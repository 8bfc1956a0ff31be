"""Real processes on loopback for the router's tests: canned backends (testkit.backend), routers, model servers."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import httpx

from hearth_common.keys import write_key_file
from hearth_common.procs import CODE_ROOT, child_env, free_port
from testkit.procs import ServerProcess

ROOT = Path(__file__).resolve().parents[2]


class Proc(ServerProcess):
    """A server process on a loopback port, started on construction, restartable on the same port, with an httpx
    client for it (`http`)."""

    def __init__(
        self,
        argv: list[str],
        port: int,
        ready_path: str,
        ready_status: int | None = None,
        headers: dict[str, str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        # ready_status None: any answer means up
        super().__init__(
            argv,
            ready_url=self.url + ready_path,
            ready_status=ready_status,
            ready_headers=headers,
            env=child_env(os.environ if env is None else env),
            cwd=CODE_ROOT,
        )
        # one client: httpx.post() builds an SSL context each call
        self.http = httpx.Client(base_url=self.url, timeout=30, headers=headers)
        self.start()


class FakeBackend(Proc):
    def __init__(self, name: str, mode: str = "ok") -> None:
        self.name = name
        port = free_port()
        super().__init__(
            [sys.executable, "-m", "testkit.backend", "--port", str(port), "--name", name, "--mode", mode],
            port,
            "/_stats",
        )

    def set_mode(self, mode: str, **extra: str) -> None:
        self.http.post("/_mode", json={"mode": mode, **extra}).raise_for_status()

    def stats(self) -> dict:
        return self.http.get("/_stats").json()

    def registration(self, models: list[str] | None = None, weight: float = 1.0) -> dict:
        return {
            "name": self.name,
            "url": self.url,
            "model_type": "generic",
            "models": models or ["m"],
            "weight": weight,
        }


ADMIN_KEY = "test-admin-key"


class Router(Proc):
    """`python -m route` with an admin key (from an owner-only file); its `http` client sends the key."""

    def __init__(self, *args: str, admin_key: str | None = ADMIN_KEY, env: dict[str, str] | None = None) -> None:
        port = free_port()
        self.admin = {"Authorization": f"Bearer {admin_key}"} if admin_key else {}
        if admin_key:
            self._keys = tempfile.TemporaryDirectory()
            key_file = Path(self._keys.name) / "admin.key"
            write_key_file(key_file, admin_key)
            args = ("--admin-key-file", str(key_file), *args)
        super().__init__(
            [sys.executable, "-m", "route", "--port", str(port), *args], port, "/health", headers=self.admin, env=env
        )

    def register(self, backend: FakeBackend, models: list[str] | None = None, weight: float = 1.0) -> httpx.Response:
        return self.http.post("/backends/register", json=backend.registration(models, weight))

    def backends(self) -> dict[str, dict]:
        return {b["name"]: b for b in self.http.get("/backends").json()["backends"]}

    def chat(self, model: str = "m", **extra: object) -> httpx.Response:
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
        return self.http.post("/v1/chat/completions", json=body)


class Cluster:
    """Tracks every process a test starts and kills them all afterwards."""

    def __init__(self) -> None:
        self.procs: list[Proc] = []

    def backend(self, name: str, mode: str = "ok") -> FakeBackend:
        b = FakeBackend(name, mode)
        self.procs.append(b)
        return b

    def serve(self, model: Path, *args: str, env: dict[str, str] | None = None) -> Proc:
        """A real model server (`python -m serve`) on the given GGUF, once its /health answers 200. It has the
        routers' admin key (ADMIN_KEY) for --router."""
        port = free_port()
        argv = [
            sys.executable,
            "-m",
            "serve",
            "--model-path",
            str(model),
            "--port",
            str(port),
            "--threads",
            "1",
            "--ctx-size",
            "512",
            *args,
        ]
        env = {**os.environ, "HEARTH_SERVE_ROUTER_KEY": ADMIN_KEY, **(env or {})}
        p = Proc(argv, port, "/health", ready_status=200, env=env)
        self.procs.append(p)
        return p

    def router(self, *args: str, admin_key: str | None = ADMIN_KEY, env: dict[str, str] | None = None) -> Router:
        r = Router(*args, admin_key=admin_key, env=env)
        self.procs.append(r)
        return r

    def close(self) -> None:
        for p in self.procs:
            p.kill()
            p.close()
            p.http.close()


def parse_stream(text: str) -> tuple[bool, bool]:
    """(ended with [DONE], carried an error event) for an SSE body."""
    events = [e[len("data: ") :] for e in text.split("\n\n") if e.startswith("data: ")]
    errors = any(e != "[DONE]" and "error" in json.loads(e) for e in events)
    return bool(events) and events[-1] == "[DONE]", errors
