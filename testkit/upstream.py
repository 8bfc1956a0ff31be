"""A fake of route/upstream.py's transport for the router's unit tests: canned answers per backend, no sockets.

    fake = FakeUpstream()
    fake.behaviour["http://a"] = ok("a")                  # a factory of responses, or an exception to raise
    fake.behaviour["http://b"] = BackendUnreachable("refused")
    fake.unhealthy.add("http://b")                      # its probe answers "down"
    app = route.app.create_app(cfg, upstream=lambda _: fake)

`fake.calls` lists the backend base URLs sent to, in order.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable


class FakeResponse:
    """An UpstreamResponse with a whole body (`read`) or a list of stream chunks (`chunks`)."""

    def __init__(
        self,
        status: int = 200,
        body: bytes = b"",
        content_type: str = "application/json",
        chunks: list[bytes] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.headers = {"content-type": content_type, **(headers or {})}
        self._body = body
        self._chunks = chunks
        self.closed = False

    async def read(self) -> bytes:
        return self._body

    async def chunks(self) -> AsyncIterator[bytes]:
        for c in self._chunks or []:
            yield c

    def close(self) -> None:
        self.closed = True

    def release(self) -> None:
        pass


def ok(name: str) -> Callable[[], FakeResponse]:
    """A backend that answers every request with a chat completion naming itself (`who`)."""
    return lambda: FakeResponse(200, json.dumps({"object": "chat.completion", "choices": [], "who": name}).encode())


class FakeUpstream:
    """An Upstream whose backends answer from `behaviour` (base URL -> response factory or exception)."""

    def __init__(self) -> None:
        self.behaviour: dict[str, Callable[[], FakeResponse] | Exception] = {}
        self.unhealthy: set[str] = set()
        self.calls: list[str] = []

    async def send(self, url: str, body: bytes, headers: object) -> FakeResponse:
        base = url.rsplit("/api/" if "/api/" in url else "/v1/", 1)[0]
        self.calls.append(base)
        action = self.behaviour[base]
        if isinstance(action, Exception):
            raise action
        return action()

    async def probe(self, url: str, headers: object = None) -> str | None:
        return "down" if url in self.unhealthy else None

    async def close(self) -> None:
        pass
