"""The app with a fake upstream client: error bodies, retry rules and ejection, without sockets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from route.app import create_app
from route.config import RouterConfig
from route.errors import BackendTimeout, BackendUnreachable
from testkit.upstream import FakeResponse, FakeUpstream, ok

pytestmark = pytest.mark.anyio  # anyio's pytest plugin runs the async tests (anyio comes with httpx)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
KEY = {"Authorization": "Bearer sesame"}


async def start(fake: FakeUpstream, names: list[str], **settings: object):
    cfg = RouterConfig(strategy="round_robin", admin_key="sesame", eject_base=60, allow_backend_hosts=["*"], **settings)
    app = create_app(cfg, upstream=lambda _: fake)
    test_app = app.test_app()
    await test_app.startup()
    client = app.test_client()
    for n in names:
        fake.behaviour.setdefault(f"http://{n}", ok(n))
        r = await client.post(
            "/backends/register", json={"name": n, "url": f"http://{n}", "models": ["m"]}, headers=KEY
        )
        assert r.status_code == 200, await r.get_json()
    return test_app, client


async def error_of(resp) -> tuple[int, str]:
    body = await resp.get_json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return resp.status_code, body["error"]["code"] or body["error"]["type"]


async def test_routing_fields_and_header() -> None:
    fake = FakeUpstream()
    test_app, client = await start(fake, ["a"])
    r = await client.post("/v1/chat/completions", json=CHAT)
    body = await r.get_json()
    assert r.headers["X-Backend"] == "a" and body["who"] == "a"
    assert body["_routing"] == {"backend": "a", "model_type": "generic"}
    await test_app.shutdown()


async def test_client_errors() -> None:
    fake = FakeUpstream()
    test_app, client = await start(fake, ["a"], max_body=1024)
    assert await error_of(await client.post("/v1/chat/completions", data=b"{nope")) == (400, "invalid_request")
    assert await error_of(await client.post("/v1/chat/completions", json=[1])) == (400, "invalid_request")
    assert await error_of(await client.post("/v1/chat/completions", json={"messages": []})) == (400, "invalid_request")
    assert await error_of(await client.post("/v1/completions", json={"model": "m", "stream": "yes"})) == (
        400,
        "invalid_request",
    )
    assert await error_of(await client.post("/v1/chat/completions", json={**CHAT, "model": "ghost"})) == (
        404,
        "model_not_found",
    )
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 2000}]}
    assert await error_of(await client.post("/v1/chat/completions", json=big)) == (413, "request_too_large")
    assert await error_of(await client.get("/backends")) == (401, "invalid_api_key")
    assert await error_of(await client.get("/backends", headers={"Authorization": "Bearer wrong"})) == (
        401,
        "invalid_api_key",
    )
    assert await error_of(await client.delete("/backends/ghost", headers=KEY)) == (404, "not_found")
    assert fake.calls == []
    await test_app.shutdown()


async def test_5xx_is_retried_elsewhere_and_ejects() -> None:
    fake = FakeUpstream()
    fake.behaviour["http://a"] = lambda: FakeResponse(500, b'{"error": {"message": "boom"}}')
    test_app, client = await start(fake, ["a", "b"])
    for _ in range(4):
        r = await client.post("/v1/chat/completions", json=CHAT)
        assert r.status_code == 200 and r.headers["X-Backend"] == "b"
    assert fake.calls == ["http://a", "http://b", "http://b", "http://b", "http://b"]
    backends = {b["name"]: b for b in (await (await client.get("/backends", headers=KEY)).get_json())["backends"]}
    assert backends["a"]["healthy"] is False and backends["a"]["ejections"] == 1
    assert backends["b"]["healthy"] is True
    metrics = (await (await client.get("/metrics", headers=KEY)).get_data()).decode()
    assert 'route_retries_total{model="m"} 1.0' in metrics
    assert 'route_ejections_total{backend="a"} 1.0' in metrics
    await test_app.shutdown()


async def test_retries_stop_at_k_and_pass_the_last_answer_on() -> None:
    fake = FakeUpstream()
    for n in "abc":
        fake.behaviour[f"http://{n}"] = lambda: FakeResponse(
            429, b'{"error": {"message": "queue full", "type": "queue_full", "param": null, "code": "queue_full"}}'
        )
    test_app, client = await start(fake, ["a", "b", "c"], max_retries=1)
    r = await client.post("/v1/chat/completions", json=CHAT)
    assert await error_of(r) == (429, "queue_full")
    assert len(fake.calls) == 2
    # 429 is a full queue, not a sick backend: nobody is ejected
    status = await (await client.get("/status", headers=KEY)).get_json()
    assert all(b["healthy"] for b in status["backends"])
    await test_app.shutdown()


async def test_connection_errors_and_garbage_are_retried_timeouts_are_not() -> None:
    fake = FakeUpstream()
    fake.behaviour["http://a"] = BackendUnreachable("refused")
    fake.behaviour["http://b"] = lambda: FakeResponse(200, b"<html>")
    test_app, client = await start(fake, ["a", "b", "c"])
    for _ in range(3):
        r = await client.post("/v1/chat/completions", json=CHAT)
        assert r.status_code == 200 and r.headers["X-Backend"] == "c"
    assert sorted(fake.calls) == ["http://a", "http://b", "http://c", "http://c", "http://c"]
    fake.behaviour["http://c"] = BackendTimeout("slow")
    r = await client.post("/v1/chat/completions", json=CHAT)
    assert await error_of(r) == (504, "upstream_timeout")
    assert len(fake.calls) == 6
    await test_app.shutdown()


async def test_stream_opening_with_an_error_is_retried() -> None:
    fake = FakeUpstream()
    done = b"data: [DONE]\n\n"
    fake.behaviour["http://a"] = lambda: FakeResponse(
        200, content_type="text/event-stream", chunks=[b'data: {"error": {"message": "oom"}}\n\n', done]
    )
    fake.behaviour["http://b"] = lambda: FakeResponse(
        200, content_type="text/event-stream", chunks=[b'data: {"choices": []}\n\n', done]
    )
    test_app, client = await start(fake, ["a", "b"])
    r = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert r.headers["X-Backend"] == "b" and r.headers["X-Accel-Buffering"] == "no"
    assert (await r.get_data()).endswith(done) and b"oom" not in await r.get_data()
    await test_app.shutdown()


async def test_503_when_no_backend_is_healthy(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text(
        json.dumps({"version": 1, "backends": [{"name": "a", "url": "http://a", "models": ["m"]}], "served": ["m"]})
    )
    fake = FakeUpstream()
    fake.unhealthy.add("http://a")
    test_app, client = await start(fake, [], state_file=state)
    assert await error_of(await client.post("/v1/chat/completions", json=CHAT)) == (503, "no_healthy_backend")
    assert (await client.get("/health")).status_code == 503
    assert (await (await client.get("/v1/models")).get_json())["data"] == []
    await test_app.shutdown()


async def test_503_with_retry_after_is_retried_elsewhere_and_ejects_nobody() -> None:
    """A model server shutting down (or refusing for now) answers 503 + Retry-After: the request goes to another
    backend, and the refusing one is not counted as failed or ejected (its health checks take it out when it stops
    answering them). A 503 without Retry-After is still a failure, as any other 5xx."""
    fake = FakeUpstream()
    shutting = b'{"error": {"message": "shutting down", "type": "server_error", "code": "shutting_down"}}'
    fake.behaviour["http://a"] = lambda: FakeResponse(503, shutting, headers={"retry-after": "2"})
    test_app, client = await start(fake, ["a", "b"])
    for _ in range(4):
        r = await client.post("/v1/chat/completions", json=CHAT)
        assert r.status_code == 200 and r.headers["X-Backend"] == "b"
    refused = fake.calls.count("http://a")
    assert refused >= 2 and fake.calls.count("http://b") == 4  # a stays in the rotation: each refusal costs a retry
    backends = {b["name"]: b for b in (await (await client.get("/backends", headers=KEY)).get_json())["backends"]}
    assert backends["a"]["healthy"] is True and backends["a"]["ejections"] == 0 and backends["a"]["errors"] == 0
    metrics = (await (await client.get("/metrics", headers=KEY)).get_data()).decode()
    assert f'route_retries_total{{model="m"}} {refused:.1f}' in metrics and "route_ejections_total{" not in metrics
    # the only backend left refusing: its 503 and Retry-After reach the client
    fake.behaviour["http://b"] = fake.behaviour["http://a"]
    r = await client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 503 and r.headers["Retry-After"] == "2"
    assert (await r.get_json())["error"]["code"] == "shutting_down"
    # a client's mistake (4xx) is passed on and never counts against a backend
    fake.behaviour["http://a"] = fake.behaviour["http://b"] = lambda: FakeResponse(400, b'{"error": {"message": "no"}}')
    assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 400
    backends = {b["name"]: b for b in (await (await client.get("/backends", headers=KEY)).get_json())["backends"]}
    assert all(b["healthy"] and b["errors"] == 0 for b in backends.values())
    await test_app.shutdown()


async def test_models_say_what_their_backends_registered_them_to_do() -> None:
    """/v1/models' `capabilities`: what the model's healthy backends registered, together in the vocabulary's order
    (hearth_common/capabilities.py); left out where no backend said; a capability outside it is a 400."""
    fake = FakeUpstream()
    test_app, client = await start(fake, [])
    regs = [
        {"name": "a", "url": "http://a", "models": ["chat", "both"], "capabilities": ["chat", "vision"]},
        {"name": "b", "url": "http://b", "models": ["rr", "both"], "capabilities": ["rerank"]},
        {"name": "c", "url": "http://c", "models": ["old"]},  # a server that does not say
    ]
    for reg in regs:
        fake.behaviour.setdefault(reg["url"], ok(reg["name"]))
        assert (await client.post("/backends/register", json=reg, headers=KEY)).status_code == 200
    data = (await (await client.get("/v1/models")).get_json())["data"]
    listed = {m["id"]: m.get("capabilities") for m in data}
    assert listed == {"chat": ["chat", "vision"], "both": ["chat", "rerank", "vision"], "rr": ["rerank"], "old": None}
    bad = {"name": "d", "url": "http://d", "models": ["x"], "capabilities": ["dance"]}
    assert await error_of(await client.post("/backends/register", json=bad, headers=KEY)) == (400, "invalid_request")
    await test_app.shutdown()
