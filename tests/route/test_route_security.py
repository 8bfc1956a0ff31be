"""The router's security rules through Quart's test client and a fake upstream (no sockets): who may use the
cluster API, which keys go where, which backends may register, loops, strict types at the edge, and that a
request the client got wrong never counts against a backend."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from route.app import create_app
from route.config import RouterConfig
from route.health import PROBES_AT_ONCE, probe_all, spread
from route.upstream import TIMED_OUT, UNREACHABLE, answered
from testkit.upstream import FakeResponse, FakeUpstream, ok

pytestmark = pytest.mark.anyio

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
ADMIN = {"Authorization": "Bearer adm"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class RecordingUpstream(FakeUpstream):
    def __init__(self) -> None:
        super().__init__()
        self.sent_headers: list[dict[str, str]] = []
        self.probe_answers: dict[str, str | None] = {}

    async def send(self, url: str, body: bytes, headers: Any) -> FakeResponse:
        self.sent_headers.append({k.lower(): v for k, v in headers.items()})
        return await super().send(url, body, headers)

    async def probe(self, url: str, headers: Any = None) -> str | None:
        return self.probe_answers.get(url)


async def app_with(fake: FakeUpstream, **settings: Any):
    app = create_app(RouterConfig(**settings), upstream=lambda _: fake)
    test_app = app.test_app()
    await test_app.startup()
    return test_app, app.test_client()


def reg(name: str, url: str | None = None) -> dict[str, Any]:
    return {"name": name, "url": url or f"http://127.0.0.1:{9000 + ord(name[0])}", "models": ["m"]}


async def test_the_admin_api_is_closed_without_a_key() -> None:
    fake = RecordingUpstream()
    test_app, client = await app_with(fake)
    r = await client.post("/backends/register", json=reg("a"))
    body = await r.get_json()
    assert (
        r.status_code == 403
        and body["error"]["type"] == "permission_error"
        and "--open-admin" in body["error"]["message"]
    )
    assert (await client.post("/backends/unregister", json={"name": "a"})).status_code == 403
    assert (await client.delete("/backends/a")).status_code == 403
    for path in ("/backends", "/status", "/metrics"):  # reads follow the admin key: none set, open
        assert (await client.get(path)).status_code == 200
    await test_app.shutdown()


async def test_open_admin_opens_it() -> None:
    fake = RecordingUpstream()
    test_app, client = await app_with(fake, open_admin=True)
    assert (await client.post("/backends/register", json=reg("a"))).status_code == 200
    assert (await client.delete("/backends/a")).status_code == 200
    await test_app.shutdown()


async def test_with_a_key_every_admin_route_needs_it() -> None:
    fake = RecordingUpstream()
    test_app, client = await app_with(fake, admin_key="adm", open_admin=True)  # a key wins over --open-admin
    assert (await client.post("/backends/register", json=reg("a"))).status_code == 401
    for path in ("/backends", "/status", "/metrics"):
        r = await client.get(path)
        assert r.status_code == 401 and (await r.get_json())["error"]["type"] == "authentication_error", path
        assert (await client.get(path, headers=ADMIN)).status_code == 200
    assert (await client.post("/backends/register", json=reg("a"), headers={"x-api-key": "adm"})).status_code == 200
    assert (await client.get("/health")).status_code == 200
    await test_app.shutdown()


async def test_client_keys_stay_with_the_router_and_backends_get_the_backend_key() -> None:
    fake = RecordingUpstream()
    fake.behaviour["http://127.0.0.1:9097"] = ok("a")
    test_app, client = await app_with(fake, admin_key="adm", backend_key="bk")
    assert (await client.post("/backends/register", json=reg("a"), headers=ADMIN)).status_code == 200
    r = await client.post(
        "/v1/chat/completions",
        json=CHAT,
        headers={"Authorization": "Bearer client-secret", "x-api-key": "client-secret", "X-Request-Id": "r1"},
    )
    assert r.status_code == 200
    sent = fake.sent_headers[-1]
    assert sent["authorization"] == "Bearer bk" and "x-api-key" not in sent and sent["x-request-id"] == "r1"
    assert "client-secret" not in json.dumps(sent)
    await test_app.shutdown()


async def test_with_an_api_key_the_client_api_needs_it() -> None:
    fake = RecordingUpstream()
    fake.behaviour["http://127.0.0.1:9097"] = ok("a")
    test_app, client = await app_with(fake, admin_key="adm", api_key="sk")
    assert (await client.post("/backends/register", json=reg("a"), headers=ADMIN)).status_code == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer adm"}):
        r = await client.post("/v1/chat/completions", json=CHAT, headers=headers)
        assert r.status_code == 401 and (await r.get_json())["error"]["code"] == "invalid_api_key"
    assert (await client.get("/v1/models")).status_code == 401
    assert (
        await client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer sk"})
    ).status_code == 200
    assert (await client.post("/v1/chat/completions", json=CHAT, headers={"x-api-key": "sk"})).status_code == 200
    assert (await client.get("/v1/models", headers={"x-api-key": "sk"})).status_code == 200
    assert (await client.get("/health")).status_code == 200
    assert len(fake.sent_headers) == 2
    await test_app.shutdown()


async def test_registration_says_unreachable_or_not_a_model_server_only() -> None:
    fake = RecordingUpstream()
    test_app, client = await app_with(fake, admin_key="adm")
    answers = {
        f"{UNREACHABLE}: ClientConnectorError": "is unreachable",
        TIMED_OUT: "is unreachable",
        answered(404): "is not a model server",
        answered(503): "is not a model server",
    }
    for i, (reason, said) in enumerate(answers.items()):
        url = f"http://127.0.0.1:{8100 + i}"
        fake.probe_answers[url] = reason
        r = await client.post("/backends/register", json=reg("a", url), headers=ADMIN)
        message = (await r.get_json())["error"]["message"]
        assert r.status_code == 400 and said in message and "ClientConnectorError" not in message, message
    assert (await (await client.get("/backends", headers=ADMIN)).get_json())["backends"] == []
    await test_app.shutdown()


@pytest.mark.parametrize(
    ("allowed", "url", "accepted"),
    [
        (None, "http://127.0.0.1:8000", True),
        (None, "http://127.9.9.9:8000", True),
        (None, "http://localhost:8000", True),
        (None, "http://[::1]:8000", True),
        (None, "http://10.0.0.5:8000", False),
        (None, "http://169.254.169.254", False),  # a cloud metadata address
        (None, "http://example.com", False),
        (None, "http://2130706433:8000", False),  # 127.0.0.1 spelled as a number: not a name we compare
        (None, "https://user:pw@127.0.0.1:8000", False),
        (None, "file:///etc/passwd", False),
        (["10.0.0.0/8"], "http://10.1.2.3:8000", True),
        (["10.0.0.0/8"], "http://127.0.0.1:8000", False),
        (["*.lan"], "http://gpu1.lan:8000", True),
        (["*.lan"], "http://lan.evil:8000", False),
        (["*"], "http://example.com", True),
    ],
)
async def test_backend_hosts(allowed: list[str] | None, url: str, accepted: bool) -> None:
    fake = RecordingUpstream()
    settings: dict[str, Any] = {"admin_key": "adm"}
    if allowed is not None:
        settings["allow_backend_hosts"] = allowed
    test_app, client = await app_with(fake, **settings)
    r = await client.post("/backends/register", json=reg("a", url), headers=ADMIN)
    assert (r.status_code == 200) == accepted, await r.get_json()
    if not accepted:
        assert (await r.get_json())["error"]["param"] == "url"
    await test_app.shutdown()


async def test_a_request_that_passed_this_router_is_a_loop() -> None:
    fake = RecordingUpstream()
    fake.behaviour["http://127.0.0.1:9097"] = ok("a")
    test_app, client = await app_with(fake, admin_key="adm")
    assert (await client.post("/backends/register", json=reg("a"), headers=ADMIN)).status_code == 200
    assert (await client.post("/v1/chat/completions", json=CHAT, headers={"Via": "1.1 proxy-x"})).status_code == 200
    via = fake.sent_headers[-1]["via"]
    assert via.startswith("1.1 proxy-x, 1.1 hearth-")  # what came in, then this router
    mine = via.split(", ")[-1]
    for path in ("/v1/chat/completions", "/health"):  # a URL that leads back here answers its probe 508 too
        r = (
            await client.post(path, json=CHAT, headers={"Via": f"1.0 other, {mine}"})
            if path.startswith("/v1")
            else await client.get(path, headers={"Via": mine})
        )
        assert r.status_code == 508 and (await r.get_json())["error"]["code"] == "loop_detected", path
    long_chain = ", ".join(f"1.1 r{i}" for i in range(16))
    assert (await client.post("/v1/chat/completions", json=CHAT, headers={"Via": long_chain})).status_code == 508
    assert len(fake.sent_headers) == 1
    await test_app.shutdown()


async def test_registering_the_router_itself_is_refused() -> None:
    """The probe carries this router's Via; a URL that is the router answers 508: 'leads back to this router'."""
    fake = RecordingUpstream()
    fake.probe_answers["http://127.0.0.1:8080"] = answered(508)
    test_app, client = await app_with(fake, admin_key="adm")
    r = await client.post("/backends/register", json=reg("self", "http://127.0.0.1:8080"), headers=ADMIN)
    assert r.status_code == 400 and "leads back to this router" in (await r.get_json())["error"]["message"]
    await test_app.shutdown()


async def test_a_backend_508_is_passed_on_and_ejects_nobody() -> None:
    fake = RecordingUpstream()
    for port in (9097, 9098):
        fake.behaviour[f"http://127.0.0.1:{port}"] = lambda: FakeResponse(508, b'{"error": {"message": "loop"}}')
    test_app, client = await app_with(fake, admin_key="adm", strategy="round_robin")
    for name in "ab":
        assert (await client.post("/backends/register", json=reg(name), headers=ADMIN)).status_code == 200
    for _ in range(3):
        assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 508
    assert len(fake.calls) == 3  # not retried either
    status = await (await client.get("/status", headers=ADMIN)).get_json()
    assert all(b["healthy"] and b["ejections"] == 0 for b in status["backends"])
    await test_app.shutdown()


BAD_BODIES = [
    b'{"model": "m", "messages": [{"role": "user", "content": "\\ud800"}]}',
    b'{"model": "m", "messages": ' + b"[" * 1200 + b"]" * 1200 + b"}",
    b'{"model": "m", "seed": ' + b"7" * 5000 + b"}",
    b'{"model": "m", "max_tokens": "8"}',
    b'{"model": "m", "repeat_penalty": Infinity}',
    b'{"model": "m", "temperature": 1e400}',
    b'{"model": "m", "stream": "yes"}',
    b'{"model": 5}',
]


@pytest.mark.parametrize("raw", BAD_BODIES)
async def test_bad_input_is_a_400_at_the_edge_and_never_reaches_a_backend(raw: bytes) -> None:
    fake = RecordingUpstream()
    fake.behaviour["http://127.0.0.1:9097"] = ok("a")
    test_app, client = await app_with(fake, admin_key="adm")
    assert (await client.post("/backends/register", json=reg("a"), headers=ADMIN)).status_code == 200
    r = await client.post("/v1/chat/completions", data=raw, headers={"Content-Type": "application/json"})
    body = await r.get_json()
    assert r.status_code == 400 and body["error"]["type"] == "invalid_request_error" and body["error"]["message"]
    assert fake.calls == []
    await test_app.shutdown()


async def test_wrong_method_is_405_with_allow() -> None:
    test_app, client = await app_with(RecordingUpstream())
    for path in ("/v1/chat/completions", "/v1/completions"):
        r = await client.get(path)
        assert r.status_code == 405 and r.headers["Allow"] == "POST" and (await r.get_json())["error"]["message"]
    r = await client.post("/v1/models")
    assert r.status_code == 405 and "GET" in r.headers["Allow"] and (await r.get_json())["error"]["message"]
    await test_app.shutdown()


async def test_client_errors_from_a_backend_never_count_against_it() -> None:
    fake = RecordingUpstream()
    test_app, client = await app_with(fake, admin_key="adm", strategy="round_robin")
    for i, status in enumerate((400, 401, 404, 408, 413, 422)):
        fake.behaviour["http://127.0.0.1:9097"] = lambda s=status: FakeResponse(s, b'{"error": {"message": "yours"}}')
        if i == 0:
            assert (await client.post("/backends/register", json=reg("a"), headers=ADMIN)).status_code == 200
        assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == status
    backend = (await (await client.get("/backends", headers=ADMIN)).get_json())["backends"][0]
    assert backend["healthy"] and backend["errors"] == 0 and backend["ejections"] == 0
    await test_app.shutdown()


async def test_state_file_is_written_off_the_event_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import route.state

    threads: list[str] = []
    original = route.state.write_state

    def recording(path: Path, data: dict) -> None:
        threads.append(threading.current_thread().name)
        original(path, data)

    monkeypatch.setattr(route.state, "write_state", recording)
    state = tmp_path / "state.json"
    test_app, client = await app_with(RecordingUpstream(), admin_key="adm", state_file=state)
    for name in "abc":
        assert (await client.post("/backends/register", json=reg(name), headers=ADMIN)).status_code == 200
    assert (await client.delete("/backends/b", headers=ADMIN)).status_code == 200
    assert len(threads) == 4 and threading.main_thread().name not in threads
    assert [b["name"] for b in json.loads(state.read_text())["backends"]] == ["a", "c"]  # the last write wins, whole
    await test_app.shutdown()


async def test_probes_run_a_bounded_number_at_once() -> None:
    running = peak = 0

    async def probe(url: str) -> str | None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001)
        running -= 1
        return None if url.endswith("0") else "down"

    urls = [f"http://127.0.0.1:{p}" for p in range(9000, 9300)]
    results = await probe_all(urls, probe)
    assert peak == PROBES_AT_ONCE and results == [None if u.endswith("0") else "down" for u in urls]


def test_first_checks_after_a_start_are_spread() -> None:
    times = [spread(i, 1000, 100.0, 30.0) for i in range(1000)]
    assert min(times) == 115.0 and max(times) < 130.0
    assert len({round(t, 1) for t in times}) > 100  # not all due at one moment


async def test_the_upstream_pool_is_bounded_per_backend() -> None:
    """A real aiohttp backend in this loop counts the requests it holds at once: never more than the bound."""
    from aiohttp import web

    from route.upstream import AiohttpUpstream

    held = peak = 0

    async def slow(request: web.Request) -> web.Response:
        nonlocal held, peak
        held += 1
        peak = max(peak, held)
        await asyncio.sleep(0.05)
        held -= 1
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    upstream = AiohttpUpstream(RouterConfig(max_backend_connections=3))
    try:

        async def one() -> int:
            resp = await upstream.send(f"http://127.0.0.1:{port}/v1/chat/completions", b"{}", {})
            await resp.read()
            resp.release()
            return resp.status

        assert await asyncio.gather(*(one() for _ in range(12))) == [200] * 12
        assert peak == 3
    finally:
        await upstream.close()
        await runner.cleanup()
