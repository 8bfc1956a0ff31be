"""The HTTP edge of the router and the model servers: uvicorn's httptools protocol with the limits it lacks.

uvicorn bounds none of these: a client can hold a connection by sending nothing, by sending headers a byte at a
time, or grow the process by one unending header (httptools keeps appending it). This protocol:
- closes a connection that sends no request within --keep-alive seconds (a fresh one too, not only between requests);
- answers 408 when the request line and headers take longer than the header timeout;
- answers 431 past the header bytes (counted as the bytes arrive, so memory stays bounded) or header lines allowed;
- answers every protocol-level error with an OpenAI error body (uvicorn's are plain text);
- closes the connection after a response whose request body was not read to its end (it cannot be reused), and
  after a request that asked for a protocol upgrade (none is supported: the request is answered as plain HTTP,
  but the parser reads nothing more on that connection).
Body size and body read time are the handlers' business (the router's client_api.py, the servers' wire.py, and
Quart's limits for the rest). `serve_uvicorn` runs an app behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from hearth_common.errors import error_json, error_type


@dataclass(frozen=True)
class EdgeLimits:
    max_header_bytes: int
    max_headers: int
    header_timeout: float


@dataclass(frozen=True)
class EdgeError:
    """A refusal at the edge, before any handler: its status, OpenAI error code and message."""

    status: int
    code: str
    message: str


def bad_request(message: str) -> EdgeError:
    return EdgeError(400, "invalid_request", message)


def headers_too_large(message: str) -> EdgeError:
    return EdgeError(431, "headers_too_large", message)


def request_timeout(message: str) -> EdgeError:
    return EdgeError(408, "request_timeout", message)


class _Reject(Exception):
    """Raised inside a parser callback to stop parsing; carries the answer."""

    def __init__(self, error: EdgeError) -> None:
        self.error = error


def raw_error(error: EdgeError) -> bytes:
    """A whole HTTP response for `error` that closes the connection."""
    body = error_json(error.message, error_type(error.status), error.code)
    head = (
        STATUS_LINE[error.status] + b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
    )
    return head % len(body) + body


class EdgeProtocol(HttpToolsProtocol):
    limits: EdgeLimits  # set on the subclass that edge_protocol() makes

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # inside a request's line and headers (or before the first request)
        self._began_here = False  # a request began inside the chunk being parsed
        self._head_bytes = 0
        self._head_count = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._last_request = False  # the parser stopped (an upgrade request): close after this response

    # -- timers ------------------------------------------------------------------------------------------

    # asyncio declares a BaseTransport; uvicorn's protocol, which this extends, narrows it to Transport the same way
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # uvicorn arms its keep-alive timer only after a response: a connection that never sends would stay.
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.cycle is not None and not self.cycle.response_complete:  # a pipelined request behind a running one
            self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)
            return
        self._reject(request_timeout(f"request headers not received within {self.limits.header_timeout:g} s"))

    # -- limits ------------------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        self._began_here = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._last_request = True
            if self.cycle is None or self.cycle.response_complete:
                self.transport.close()
            else:
                self.cycle.keep_alive = False  # its response says `connection: close` and ends the connection
            return
        except httptools.HttpParserError as err:
            cause = err.__context__
            self._reject(cause.error if isinstance(cause, _Reject) else bad_request("invalid HTTP request"))
            return
        if self._in_head and not self._began_here and self.parser is not None:
            # Every byte of this chunk went into a request line or headers not yet complete. (A chunk in which a
            # request began may hold the end of the one before: not counted here, so the bound is the limit plus
            # one read; on_headers_complete checks the exact size.)
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_header_bytes:
                self._reject(headers_too_large(f"request headers larger than {self.limits.max_header_bytes} bytes"))

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = self._began_here = True
        self._head_bytes = self._head_count = 0
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_count += 1
        if self._head_count > self.limits.max_headers:
            raise _Reject(headers_too_large(f"more than {self.limits.max_headers} request headers"))
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
        if size > self.limits.max_header_bytes:
            raise _Reject(headers_too_large(f"request headers larger than {self.limits.max_header_bytes} bytes"))
        self._in_head = False
        self._stop_head_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        unread = self.cycle is not None and self.cycle.more_body  # the rest of its body is still on the wire
        if self._last_request or unread:
            if not self.transport.is_closing():
                self.transport.close()  # the connection cannot carry another request
            return
        super().on_response_complete()

    # -- answers -----------------------------------------------------------------------------------------

    def send_400_response(self, msg: str) -> None:
        self._reject(bad_request(msg))

    def _reject(self, error: EdgeError) -> None:
        self._stop_head_timer()
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete or not self.cycle.response_started:
            self.transport.write(raw_error(error))
        if self.cycle is not None:
            self.cycle.disconnected = True  # its handler, if any, stops at its next receive() or send()
            self.cycle.message_event.set()
        self.transport.close()


def edge_protocol(limits: EdgeLimits) -> type[EdgeProtocol]:
    """The protocol class to give uvicorn (`http=`), with these limits."""
    return type("LimitedEdgeProtocol", (EdgeProtocol,), {"limits": limits})


async def serve_uvicorn(
    app: Any,
    host: str,
    port: int,
    limits: EdgeLimits,
    keep_alive: float,
    log_level: str,
    on_stop: Callable[[], None] | None = None,
) -> None:
    """Serve an ASGI app on uvicorn behind this edge until SIGINT or SIGTERM (the first; more change nothing), then
    let requests in flight finish (10 s at most) and return. `on_stop` runs on the loop when the signal comes, before uvicorn waits for them (the
    model servers end their streams there)."""

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            # Once only. uvicorn takes a second SIGINT as "quit now": it skips the app's shutdown, which then dies
            # cancelled with a traceback; a terminal's Ctrl-C reaching a child the stack also signals is one stop.
            if self.should_exit:
                return
            if on_stop is not None:
                on_stop()
            super().handle_exit(sig, frame)

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # uvicorn's own raises the signal again once it has shut down: a KeyboardInterrupt traceback on Ctrl-C,
            # death by SIGTERM. Ours shuts down the same way and returns.
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.handle_exit, sig, None)
            try:
                yield
            finally:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=edge_protocol(limits),
        ws="none",
        lifespan="on",
        access_log=False,  # ours: hearth_common.logs.AccessLog
        log_config=None,
        log_level=log_level,
        timeout_keep_alive=int(keep_alive),
        timeout_graceful_shutdown=10,
    )
    await Server(config).serve()
