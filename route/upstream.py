"""The upstream transport: how the router talks HTTP to a backend, behind an interface tests can fake.

`Upstream` sends one request and probes /health; `UpstreamResponse` is what a send returns. `AiohttpUpstream` is the
real transport (aiohttp's client measured faster than httpx in bench/route.py) and the only place that knows
aiohttp's exceptions: it maps them to route.errors' BackendError tree. The test double is testkit/upstream.py.

A probe answers None (healthy) or a short reason that starts with one of UNREACHABLE, TIMED_OUT or answered(status);
registration tells a client only which of the three it was (route/admin.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Protocol

import aiohttp

from route.config import RouterConfig
from route.errors import BackendTimeout, BackendUnreachable

UNREACHABLE, TIMED_OUT = "unreachable", "timed out"
PROBE_READ_LIMIT = 64 * 1024  # a model server's /health answer is small; no more is read


def answered(status: int) -> str:
    return f"/health answered {status}"


class UpstreamResponse(Protocol):
    @property
    def status(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...

    async def read(self) -> bytes: ...
    def chunks(self) -> AsyncIterator[bytes]: ...
    def close(self) -> None:
        """Drop the connection at once (the client left), so the backend frees its slot."""

    def release(self) -> None:
        """The body was read to its end: the connection may be reused."""


class Upstream(Protocol):
    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> UpstreamResponse:
        """POST body to url: the backend's response, its body not yet read. A redirect is returned, never followed."""

    async def probe(self, url: str, headers: Mapping[str, str]) -> str | None:
        """GET url/health: None when it answers 200, else a short reason (UNREACHABLE..., TIMED_OUT, answered())."""

    async def close(self) -> None: ...


class _AiohttpResponse:
    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status = resp.status
        self.headers = resp.headers

    async def read(self) -> bytes:
        try:
            return await self._resp.read()
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise BackendTimeout("timed out reading the response") from exc
        except aiohttp.ClientError as exc:
            raise BackendUnreachable(f"response cut: {type(exc).__name__}") from exc

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for data in self._resp.content.iter_any():
                yield data
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise BackendTimeout("timed out waiting for the stream's next bytes") from exc
        except aiohttp.ClientError as exc:
            raise BackendUnreachable(f"stream cut: {type(exc).__name__}") from exc

    def close(self) -> None:
        self._resp.close()

    def release(self) -> None:
        self._resp.release()


class AiohttpUpstream:
    """One pooled aiohttp session for every backend. Create it inside the running event loop.

    The pool holds at most --max-backend-connections to one backend; more requests wait for a connection.
    """

    def __init__(self, cfg: RouterConfig) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=cfg.max_backend_connections, keepalive_timeout=30),
            auto_decompress=False,
            # No Accept-Encoding: bodies must come plain, since _routing is added and SSE is scanned.
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
        )
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=cfg.connect_timeout, sock_read=cfg.timeout)
        self._probe_timeout = aiohttp.ClientTimeout(total=cfg.health_timeout)

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> UpstreamResponse:
        try:
            # Never follow a redirect: the client's prompt would go to a host --allow-backend-hosts may forbid, and
            # that host's answer would come back as the backend's. The policy (proxy.py) makes a 3xx a failure.
            resp = await self._session.post(
                url, data=body, headers=headers, timeout=self._timeout, allow_redirects=False
            )
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise BackendTimeout("timed out waiting for the response") from exc
        except aiohttp.ClientError as exc:
            raise BackendUnreachable(f"{type(exc).__name__}: {exc}") from exc
        return _AiohttpResponse(resp)

    async def probe(self, url: str, headers: Mapping[str, str]) -> str | None:
        try:
            async with self._session.get(
                url + "/health", headers=headers, timeout=self._probe_timeout, allow_redirects=False
            ) as resp:
                await resp.content.read(PROBE_READ_LIMIT)
                return None if resp.status == 200 else answered(resp.status)
        except (TimeoutError, aiohttp.ServerTimeoutError):
            return TIMED_OUT
        except aiohttp.ClientError as exc:
            return f"{UNREACHABLE}: {type(exc).__name__}"

    async def close(self) -> None:
        await self._session.close()
