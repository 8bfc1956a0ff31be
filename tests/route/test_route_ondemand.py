"""The router's side of on-demand loading against a fake supervisor (testkit/supervisor.py) and a fake upstream: what
a client hears while a stack model is not servable yet. The real supervisor is tested in tests/stack and tests/e2e."""

from __future__ import annotations

import logging
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from route.app import create_app
from route.catalog import write_catalog
from route.config import RouterConfig
from testkit.stack import StackProcess, demo_models_missing
from testkit.supervisor import FakeSupervisor
from testkit.upstream import FakeUpstream

pytestmark = pytest.mark.anyio

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
MESSAGES = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def supervisor() -> AsyncIterator[FakeSupervisor]:
    async with FakeSupervisor() as sup:
        yield sup


async def router(sup: FakeSupervisor, tmp_path: Path) -> tuple[Any, Any]:
    path = tmp_path / "catalog.json"
    write_catalog(sup.catalog(["m"]), path)
    cfg = RouterConfig(catalog=path, admin_key="sesame", allow_backend_hosts=["*"])
    app = create_app(cfg, upstream=lambda _: FakeUpstream())
    test_app = app.test_app()
    await test_app.startup()
    return test_app, app.test_client()


async def test_a_catalog_model_with_no_backend_yet_gets_503_with_retry_after(
    supervisor: FakeSupervisor, tmp_path: Path
) -> None:
    """A restarted router: the supervisor runs `m` but has not registered its servers again yet. A request for it
    hears 503 + Retry-After in its API's error shape (a 404 would tell the client the model does not exist); a name
    the catalog lacks stays 404."""
    supervisor.running["m"] = "loaded"
    test_app, client = await router(supervisor, tmp_path)
    try:
        r = await client.post("/v1/chat/completions", json=CHAT)
        body = await r.get_json()
        assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1, body
        assert body["error"]["type"] == "server_error" and body["error"]["code"] == "no_healthy_backend"
        r = await client.post("/v1/messages", json=MESSAGES)
        body = await r.get_json()
        assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1, body
        assert body["type"] == "error" and body["error"]["type"] == "overloaded_error"
        r = await client.post("/v1/chat/completions", json={**CHAT, "model": "ghost"})
        assert r.status_code == 404 and (await r.get_json())["error"]["code"] == "model_not_found"
        assert "Retry-After" not in r.headers
        r = await client.post("/v1/messages", json={**MESSAGES, "model": "ghost"})
        assert r.status_code == 404 and (await r.get_json())["error"]["type"] == "not_found_error"
    finally:
        await test_app.shutdown()


async def test_a_failed_load_tells_the_client_a_short_reason_and_logs_the_details(
    supervisor: FakeSupervisor, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The supervisor's refusal carries the end of the server's owner-only log (paths, command lines, other clients'
    access lines): that goes to the router's log, and the client gets a short reason with Retry-After."""
    log_path = tmp_path / "state" / "logs" / "m.log"
    supervisor.start_error = (
        f"m did not start; the end of {log_path}:\n"
        "  File /opt/hearth/serve/__main__.py, line 12, in main\n"
        '127.0.0.1 - "POST /v1/chat/completions HTTP/1.1" 200 secret-question\n'
        "OSError: cannot open /home/alice/models/m.gguf"
    )
    test_app, client = await router(supervisor, tmp_path)
    try:
        with caplog.at_level(logging.ERROR, logger="route.ondemand"):
            for path, body in (("/v1/chat/completions", CHAT), ("/v1/messages", MESSAGES)):
                r = await client.post(path, json=body)
                data = await r.get_data()
                assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1, data
                for leak in (b"/", b"m.log", b"secret-question", b"127.0.0.1", b"File", b"OSError", b"did not start"):
                    assert leak not in data.replace(b"/v1", b""), (leak, data)
                assert b"failed to load" in data
    finally:
        await test_app.shutdown()
    assert str(log_path) in caplog.text and "secret-question" in caplog.text
    assert [p for p, _ in supervisor.calls].count("/start") == 2  # each request tried the load again


@pytest.mark.slow
@pytest.mark.skipif(demo_models_missing() is not None, reason=str(demo_models_missing()))
def test_a_stack_model_that_cannot_start_gets_a_short_503(tmp_path: Path, demo_gguf: Callable[[str], Path]) -> None:
    """The real stack: a model whose server cannot start (its GGUF is gone by the time it loads). The client's 503
    names no path and no log line, and says when to retry; the details are in the router's log."""
    gguf = tmp_path / "m.gguf"
    shutil.copyfile(demo_gguf("demo-think"), gguf)
    stack_file = tmp_path / "stack.toml"
    stack_file.write_text(
        f'[router]\nport = 0\n[[models]]\nname = "m"\nsource = "{gguf}"\nctx_size = 256\nthreads = 1\npreload = false\n'
    )
    proc = StackProcess([str(stack_file)], tmp_path / "state")
    try:
        gguf.unlink()  # planned at start; its server, started on demand, finds nothing to load and exits
        r = httpx.post(proc.api + "/chat/completions", json=CHAT, timeout=120)
        assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1, r.text
        message = r.json()["error"]["message"]
        assert message == "model 'm' failed to load; the stack's log says why"
        assert str(tmp_path) not in r.text
        router_log = (tmp_path / "state" / "logs" / "router.log").read_text()
        assert "loading m failed: m did not start; the end of" in router_log and str(tmp_path) in router_log
    finally:
        proc.stop()
    assert proc.orphans == []
