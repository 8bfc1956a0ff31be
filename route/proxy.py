"""Forwarding: pick a backend, send, retry before the first byte, relay streams unbuffered.

The policy only: the HTTP client is the injected `Upstream` (route/upstream.py), which maps its library's
exceptions to route.errors' BackendError tree.

How a backend's answer counts:
- 2xx and a client's mistake (4xx): passed on; never counted against the backend.
- 3xx: a failure of the backend (redirects are not followed: the request would leave the backends the router may
  use); retried on another, else 502 upstream_error. The Location never reaches the client.
- 429, and 503 with Retry-After (a server full or shutting down says "not now"): retried on another backend and not
  counted against it; when every backend says so, the last answer goes to the client with its Retry-After.
- any other 5xx: a failure (counted, may eject the backend), retried on another.
- 508 Loop Detected: passed on as is: the loop is a misconfiguration, not a sick backend.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hearth_common import ollama_errors
from hearth_common.logs import note, note_delivered, note_usage
from route.config import RouterConfig
from route.errors import (
    BackendError,
    BackendTimeout,
    ModelNotFound,
    NoHealthyBackend,
    RouteError,
    UpstreamFailed,
    UpstreamTimeout,
)
from route.health import record_failure
from route.hops import LOOP
from route.metrics import Metrics
from route.ndjson import NdjsonWatch
from route.registry import Backend, Registry
from route.sse import SseWatch, error_event, terminal_events
from route.strategies import STRATEGIES, Prefix, RouteRequest, Strategy
from route.upstream import Upstream, UpstreamResponse

if TYPE_CHECKING:
    from route.nodes import Fleet
    from route.ondemand import OnDemand

PASSED_RESPONSE_HEADERS = ("content-type", "retry-after")
STREAM_TYPES = ("text/event-stream", "application/x-ndjson")  # SSE; Ollama's newline-delimited JSON
RETRY_SOON = "1"  # Retry-After for a stack model not registered yet: the supervisor registers its servers at once


@dataclass
class Routed:
    """What the app sends back: a whole body, or a stream relayed as it arrives."""

    status: int
    headers: dict[str, str]
    body: bytes | Relay


@dataclass
class Proxy:
    cfg: RouterConfig
    registry: Registry
    upstream: Upstream
    metrics: Metrics
    wake_health: asyncio.Event
    strategies: dict[str, Strategy] = field(default_factory=dict)
    ondemand: OnDemand | Fleet | None = None  # the stack's models, loaded on demand (route/ondemand.py)
    on_eject: Callable[[Backend], None] | None = None  # told of each passive ejection (route/shared/sync.py)
    share_prefixes: bool = False  # prefix strategies keep a journal for the other routers (route/shared/prefix.py)

    def strategy(self, model: str) -> Strategy:
        strategy = self.strategies.get(model)
        if strategy is None:
            strategy = self.strategies[model] = STRATEGIES[self.cfg.strategy_for(model)](self.cfg)
            if self.share_prefixes and isinstance(strategy, Prefix):
                strategy.journal = []
        return strategy

    def wants_prompt(self, model: str) -> bool:
        return self.cfg.strategy_for(model) == "prefix"

    def fail(self, backend: Backend, kind: str, error: str) -> None:
        self.metrics.failures.labels(backend.name, kind).inc()
        if record_failure(self.registry, backend, error, time.monotonic(), self.cfg):
            self.metrics.ejections.labels(backend.name).inc()
            self.wake_health.set()
            if self.on_eject is not None:
                self.on_eject(backend)

    def pick(self, request: RouteRequest, tried: set[str]) -> Backend | None:
        candidates = self.registry.candidates(request.model)
        if tried:
            candidates = [b for b in candidates if b.name not in tried]
        if not candidates:
            return None
        return self.strategy(request.model).choose(candidates, request)

    async def forward(
        self,
        path: str,
        body: bytes,
        headers: Mapping[str, str],
        request: RouteRequest,
        stream: bool,
        keep_alive: float | None = None,
    ) -> Routed:
        """Route one request; a model of the stack is loaded first if needed, and held until the response ends
        (then it stays loaded for `keep_alive` seconds, Ollama's field, or else its ttl)."""
        lease = await self.ondemand.acquire(request.model, keep_alive) if self.ondemand is not None else None
        if lease is None:
            return await self._forward(path, body, headers, request, stream)
        try:
            out = await self._forward(path, body, headers, request, stream)
        except UpstreamFailed as failed:
            # Every server of the model failed before answering: its node may have died an instant ago, before
            # anything noticed. The failures are counted now, so acquiring again finds a dead node and places the
            # model elsewhere (route/nodes.py); one more try, since nothing has reached the client yet.
            lease.release()
            assert self.ondemand is not None
            lease = await self.ondemand.acquire(request.model, keep_alive)
            if lease is None:
                raise
            try:
                out = await self._forward(path, body, headers, request, stream)
            except NoHealthyBackend:  # nowhere else to go (one machine): the first failure is the answer
                lease.release()
                raise failed from None
            except BaseException:
                lease.release()
                raise
        except BaseException:
            lease.release()
            raise
        if isinstance(out.body, Relay):
            out.body.on_finish(lease.release)
        else:
            lease.release()
        return out

    async def _forward(
        self, path: str, body: bytes, headers: Mapping[str, str], request: RouteRequest, stream: bool
    ) -> Routed:
        """Send to one backend after another until one answers, at most 1 + max_retries tries."""
        started = time.perf_counter()
        tried: set[str] = set()
        last: RouteError | Routed | None = None
        for attempt in range(self.cfg.max_retries + 1):
            backend = self.pick(request, tried)
            if backend is None:
                break
            if attempt:
                self.metrics.retries.labels(request.model).inc()
            tried.add(backend.name)
            outcome = await self._try(backend, path, body, headers, request, stream, started)
            if isinstance(outcome, Routed) and (
                (outcome.status < 500 and outcome.status != 429) or outcome.status == LOOP
            ):
                return outcome
            last = outcome
            if isinstance(outcome, UpstreamTimeout):
                break  # a hung backend would hang the retry as well; the client hears at once
        if last is None:
            if self.ondemand is not None and self.ondemand.knows(request.model):
                # A model of the stack's catalog whose servers are not registered (yet): a restarted router answers
                # before the supervisor registers them again. It exists, so not 404: 503 and a retry soon.
                raise NoHealthyBackend(
                    f"model {request.model!r} has no server registered yet", headers={"Retry-After": RETRY_SOON}
                )
            if request.model not in self.registry.served:
                raise ModelNotFound(f"no backend serves the model {request.model!r}", param="model")
            raise NoHealthyBackend(f"no healthy backend for the model {request.model!r}")
        if isinstance(last, RouteError):
            raise last
        return last

    async def _try(
        self,
        backend: Backend,
        path: str,
        body: bytes,
        headers: Mapping[str, str],
        request: RouteRequest,
        stream: bool,
        started: float,
    ) -> Routed | RouteError:
        """One attempt. Returns the response to send, or what went wrong if nothing has been sent."""
        self.registry.acquire(backend)
        note(backend=backend.name)  # the access line's backend: the last one tried
        relay_owns_backend = False
        try:
            sent = time.perf_counter()
            try:
                resp = await self.upstream.send(backend.url + path, body, headers)
            except BackendError as exc:
                return self._transport_failure(backend, request.model, exc)
            self.metrics.upstream_seconds.labels(backend.name).observe(time.perf_counter() - sent)
            out_headers = {k: resp.headers[k] for k in PASSED_RESPONSE_HEADERS if k in resp.headers}
            out_headers["X-Backend"] = backend.name
            is_stream = resp.headers.get("content-type", "").startswith(STREAM_TYPES)
            if resp.status != 200 or not (stream and is_stream):
                try:
                    data = await resp.read()
                except BackendError as exc:
                    return self._transport_failure(backend, request.model, exc)
                except BaseException:  # the client left (cancelled): drop the backend request too
                    resp.close()
                    raise
                read_done = time.perf_counter()
                resp.release()
                if 300 <= resp.status < 400:
                    self.fail(backend, "redirect", f"answered {resp.status} (a redirect; not followed)")
                    return UpstreamFailed(
                        f"backend {backend.name!r} answered a redirect, which the router does not follow"
                    )
                if resp.status >= 500 and resp.status != LOOP and not refused_for_now(resp.status, resp.headers):
                    self.fail(backend, "5xx", f"answered {resp.status}")
                elif resp.status == 200 and not is_stream:
                    routed = add_routing(data, backend)
                    if routed is None:
                        self.fail(backend, "garbage", "answered 200 with a body that is not a JSON object")
                        return UpstreamFailed(f"backend {backend.name!r} sent an invalid response")
                    data = routed
                self._count(backend, request.model, resp.status)
                self.metrics.added_seconds.observe((sent - started) + (time.perf_counter() - read_done))
                return Routed(resp.status, out_headers, data)
            # A stream: hold the first bytes back until they arrive, so a backend that fails before
            # its first byte (or opens with an in-band error) can still be retried elsewhere.
            chunks = resp.chunks()
            watch: SseWatch | NdjsonWatch = (
                NdjsonWatch() if ollama_errors.owns(path) else SseWatch(terminal_events(path))
            )
            try:
                first = await anext(chunks, b"")
            except BackendError as exc:
                resp.close()
                return self._transport_failure(backend, request.model, exc)
            except BaseException:
                resp.close()
                raise
            watch.feed(first)
            if watch.error is not None or not first:
                resp.close()
                self.fail(backend, "in_band" if first else "cut", watch.error or "empty stream")
                return UpstreamFailed(f"backend {backend.name!r} failed: {watch.error or 'empty stream'}")
            out_headers.update({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
            self._count(backend, request.model, 200)
            relay_owns_backend = True
            return Routed(200, out_headers, Relay(self, backend, resp, chunks, first, watch, path))
        finally:
            if not relay_owns_backend:
                self.registry.release(backend)

    def _transport_failure(self, backend: Backend, model: str, exc: BackendError) -> RouteError:
        if isinstance(exc, BackendTimeout):
            self.fail(backend, "timeout", str(exc))
            self._count(backend, model, 504)
            return UpstreamTimeout(f"backend {backend.name!r} timed out")
        self.fail(backend, "connect", str(exc))
        return UpstreamFailed(
            f"backend {backend.name!r} unreachable"
        )  # the detail (an address) is for admins: last_error

    def _count(self, backend: Backend, model: str, status: int) -> None:
        self.metrics.requests.labels(backend.name, model, str(status)).inc()


def refused_for_now(status: int, headers: Mapping[str, str]) -> bool:
    """A backend full or shutting down (429, or 503 with Retry-After): try another; it is not a sick backend."""
    return status == 429 or (status == 503 and "retry-after" in headers)


def add_routing(data: bytes, backend: Backend) -> bytes | None:
    """The body with `_routing` added; None when it is not a JSON object."""
    try:
        obj: Any = json.loads(data)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    obj["_routing"] = {"backend": backend.name, "model_type": backend.spec.model_type}
    note_usage(obj.get("usage"))  # the access line's tokens, from the body parsed here anyway
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


class Relay:
    """The body of a routed stream: bytes go out as they arrive; a cut stream ends with an error event.

    Closing it early (the client left) drops the backend connection at once. It owns one `active`
    count on the backend and gives it back exactly once.
    """

    def __init__(
        self,
        proxy: Proxy,
        backend: Backend,
        resp: UpstreamResponse,
        chunks: AsyncIterator[bytes],
        first: bytes,
        watch: SseWatch | NdjsonWatch,
        path: str = "/v1/chat/completions",
    ) -> None:
        self._path = path  # the API whose error event ends a cut stream
        self._proxy = proxy
        self._backend = backend
        self._resp = resp
        self._gen = self._run(chunks, first, watch)
        self._released = False
        self._then: list[Callable[[], None]] = []

    def on_finish(self, callback: Callable[[], None]) -> None:
        """Call this once the stream ends, however it ends (the on-demand lease of its model)."""
        self._then.append(callback)

    def __aiter__(self) -> Relay:
        return self

    async def __anext__(self) -> bytes:
        return await self._gen.__anext__()

    async def _run(
        self, chunks: AsyncIterator[bytes], first: bytes, watch: SseWatch | NdjsonWatch
    ) -> AsyncGenerator[bytes, None]:
        problem = None
        try:
            yield first
            ended = self._ended(watch)
            async for chunk in chunks:
                watch.feed(chunk)
                yield chunk
                ended = ended or self._ended(watch)
        except BackendError as exc:
            problem = str(exc)
        if watch.error is not None:
            self._proxy.fail(self._backend, "in_band", watch.error)
        if not watch.done:
            problem = problem or "the backend closed the stream before its end"
            self._proxy.fail(self._backend, "cut", problem)
            yield error_event(f"backend {self._backend.name!r} stream ended early: {problem}", path=self._path)
        else:
            self._resp.release()
        note_usage(watch.usage)  # the access line's tokens, when the stream carried a usage chunk
        self._finish()

    @staticmethod
    def _ended(watch: SseWatch | NdjsonWatch) -> bool:
        """Once the stream's last event is out, note the line's tokens and its end now: a client may hang up before
        the backend's body ends (the openai SDK does, on [DONE]), and then that end never comes here."""
        if watch.done:
            note_usage(watch.usage)
            note_delivered()
        return watch.done

    def _finish(self) -> None:
        if self._released:
            return
        self._released = True
        self._resp.close()  # no-op after release(); otherwise drops the backend connection
        self._proxy.registry.release(self._backend)
        for callback in self._then:
            callback()

    async def aclose(self) -> None:
        self._finish()
        await self._gen.aclose()

    def __del__(self) -> None:
        self._finish()  # safety net: Quart never started the body (the client left right after the headers)
