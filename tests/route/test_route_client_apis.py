"""Anthropic Messages and OpenAI Responses through the router, with a fake upstream (no sockets): the paths pass
by model, the router's own errors there are in each API's shape, and a stream ends at its API's terminal event
(a cut one gets the API's own error event)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from route.app import create_app
from route.config import RouterConfig
from testkit.upstream import FakeResponse, FakeUpstream

pytestmark = pytest.mark.anyio
MESSAGES = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
RESPONSES = {"model": "m", "input": "hi"}
ADMIN = {"Authorization": "Bearer adm"}
REG = {"name": "a", "url": "http://127.0.0.1:9097", "models": ["m"]}
BACKEND = "http://127.0.0.1:9097"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Recording(FakeUpstream):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, dict[str, str]]] = []

    async def send(self, url: str, body: bytes, headers: Any) -> FakeResponse:
        self.sent.append((url, {k.lower(): v for k, v in headers.items()}))
        return await super().send(url, body, headers)


async def _router(fake: FakeUpstream, **settings: Any):
    app = create_app(RouterConfig(admin_key="adm", **settings), upstream=lambda _: fake)
    test_app = app.test_app()
    await test_app.startup()
    client = app.test_client()
    assert (await client.post("/backends/register", json=REG, headers=ADMIN)).status_code == 200
    return test_app, client


def _anthropic(body: Any, kind: str) -> None:
    assert set(body) == {"type", "error"} and body["type"] == "error", body
    assert body["error"]["type"] == kind and body["error"]["message"]


async def test_paths_pass_by_model_with_anthropic_headers() -> None:
    fake = Recording()
    fake.behaviour[BACKEND] = lambda: FakeResponse(200, json.dumps({"type": "message", "content": []}).encode())
    test_app, client = await _router(fake)
    for path, body in (
        ("/v1/messages", MESSAGES),
        ("/v1/messages/count_tokens", MESSAGES),
        ("/v1/responses", RESPONSES),
    ):
        r = await client.post(
            path,
            json=body,
            headers={"anthropic-version": "2023-06-01", "anthropic-beta": "x", "x-api-key": "client-secret"},
        )
        assert r.status_code == 200 and r.headers["X-Backend"] == "a"
        url, sent = fake.sent[-1]
        assert url == BACKEND + path and sent["anthropic-version"] == "2023-06-01" and sent["anthropic-beta"] == "x"
        assert "x-api-key" not in sent  # the client's key stays with the router
    await test_app.shutdown()


async def test_router_errors_on_anthropic_paths_are_anthropic_shaped() -> None:
    fake = Recording()
    test_app, client = await _router(fake, api_key="sk")
    key = {"x-api-key": "sk"}
    r = await client.post("/v1/messages", json=MESSAGES, headers={"x-api-key": "wrong"})
    assert r.status_code == 401
    _anthropic(await r.get_json(), "authentication_error")
    r = await client.post("/v1/responses", json=RESPONSES, headers={"x-api-key": "wrong"})
    assert r.status_code == 401 and (await r.get_json())["error"]["code"] == "invalid_api_key"  # OpenAI's shape
    r = await client.get("/v1/messages", headers=key)
    assert r.status_code == 405
    _anthropic(await r.get_json(), "invalid_request_error")
    r = await client.post("/v1/messages", json={**MESSAGES, "model": "nope"}, headers=key)
    assert r.status_code == 404
    _anthropic(await r.get_json(), "not_found_error")
    r = await client.post(
        "/v1/messages/count_tokens", data=b"{oops", headers={**key, "content-type": "application/json"}
    )
    assert r.status_code == 400
    _anthropic(await r.get_json(), "invalid_request_error")
    r = await client.post("/v1/messages", json={**MESSAGES, "max_tokens": "8"}, headers=key)
    assert r.status_code == 400 and "max_tokens" in (await r.get_json())["error"]["message"]
    assert fake.sent == []  # nothing above reached the backend
    await test_app.shutdown()


@pytest.mark.parametrize(
    ("path", "body", "events", "cut_event"),
    [
        (
            "/v1/messages",
            MESSAGES,
            [
                b'event: message_start\ndata: {"type": "message_start"}\n\n',
                b'event: message_stop\ndata: {"type": "message_stop"}\n\n',
            ],
            b"event: error\n",
        ),
        (
            "/v1/responses",
            RESPONSES,
            [
                b'event: response.created\ndata: {"type": "response.created"}\n\n',
                b'event: response.completed\ndata: {"type": "response.completed"}\n\n',
            ],
            b"event: error\n",
        ),
    ],
)
async def test_streams_end_at_their_terminal_event(
    path: str, body: dict[str, Any], events: list[bytes], cut_event: bytes
) -> None:
    fake = Recording()
    fake.behaviour[BACKEND] = lambda: FakeResponse(200, content_type="text/event-stream", chunks=list(events))
    test_app, client = await _router(fake)
    r = await client.post(path, json={**body, "stream": True})
    data = await r.get_data()
    assert r.status_code == 200 and data == b"".join(events)  # passed through untouched, nothing added
    fake.behaviour[BACKEND] = lambda: FakeResponse(200, content_type="text/event-stream", chunks=events[:1])
    r = await client.post(path, json={**body, "stream": True})
    data = await r.get_data()
    assert data.startswith(events[0]) and data[len(events[0]) :].startswith(cut_event)
    payload = json.loads(data[len(events[0]) :].split(b"data: ", 1)[1])
    assert payload["type"] == "error" and b"[DONE]" not in data
    await test_app.shutdown()
