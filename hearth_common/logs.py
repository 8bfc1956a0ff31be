"""One log format for serve, route and stack: `2025-05-01 12:00:00.123 INFO serve: loaded demo-think ...`.

setup() puts it on the root logger at the level of `--log-level`. Other libraries' chatter stays out (gguf's writer
when serve converts a folder, aiohttp's and the servers' access logs); hypercorn's and
uvicorn's start lines become one line of ours, `listening on http://HOST:PORT`, and their other routine lines go.

AccessLog wraps an ASGI app and writes one line per request when its response ends (a stream: when it ends):
`POST /v1/chat/completions 200 412 ms model=demo-think prompt_tokens=15 completion_tokens=20`. The handlers add
what they know with note() (the model, token counts, the backend); nothing else of the request is logged, so no
header, key or body can reach a log.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TextIO

FORMAT = "%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s"
DATEFMT = "%Y-%m-%d %H:%M:%S"
# Other libraries' loggers and the least they show unless --log-level debug. gguf's writer lists what it writes at
# INFO, and its vocabulary helpers log guesses as warnings: the converter's own checks decide what is an error.
QUIET = {
    "gguf": logging.ERROR,
    "aiohttp": logging.WARNING,
    "asyncio": logging.WARNING,
    "httpx": logging.WARNING,
    "hypercorn.access": logging.WARNING,
    "uvicorn.access": logging.WARNING,
}
SERVER_LOGGERS = ("hypercorn.error", "uvicorn.error")
LISTENING = re.compile(r"(?:Running on|Uvicorn running on) (\S+)")


class _Stderr(logging.StreamHandler):
    """Whatever sys.stderr is when a line is written (a test's capture, say), not what it was at setup."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def setup(program: str, level: str = "info", stream: TextIO | None = None) -> logging.Logger:
    """Our format on the root logger at `level` (debug, info, warning, error), in place of an earlier setup's
    (other handlers, such as a test runner's, stay); returns the program's logger."""
    handler = logging.StreamHandler(stream) if stream is not None else _Stderr()
    handler.set_name("hearth")
    handler.setFormatter(logging.Formatter(FORMAT, DATEFMT))
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if h.get_name() != "hearth"] + [handler]
    root.setLevel(level.upper())
    for name, least in QUIET.items():
        logging.getLogger(name).setLevel(logging.DEBUG if level == "debug" else least)
    for name in SERVER_LOGGERS:
        server = logging.getLogger(name)
        server.handlers = []  # theirs would print the same line again in their own format
        server.propagate = True
        server.filters = [ServerLines(program)]
    return logging.getLogger(program)


def formatted(name: str, message: str, level: int = logging.INFO) -> str:
    """One line in our format, for a file we write ourselves (the stack's marker in a child's log)."""
    record = logging.makeLogRecord(
        {"name": name, "msg": message, "levelno": level, "levelname": logging.getLevelName(level)}
    )
    return logging.Formatter(FORMAT, DATEFMT).format(record)


class ServerLines(logging.Filter):
    """The ASGI server's start line, as ours (with the port it really bound, also for port 0); its other
    routine lines (startup, shutdown, `Waiting for application startup`) dropped below WARNING."""

    def __init__(self, program: str) -> None:
        super().__init__()
        self.program = program

    def filter(self, record: logging.LogRecord) -> bool:
        record.name = self.program
        if record.levelno >= logging.WARNING:
            return True
        match = LISTENING.search(record.getMessage())
        if match is None:
            return False
        record.msg, record.args = f"listening on {match.group(1)}", ()
        return True


# -- access lines --------------------------------------------------------------------------------------------------


@dataclass
class Access:
    """One request's access line, filled in as the request goes."""

    method: str
    path: str
    started: float
    status: int | None = None
    notes: dict[str, Any] = field(default_factory=dict)  # model, prompt_tokens, completion_tokens, backend
    written: bool = False
    details: dict[str, Any] = field(default_factory=dict)  # known in-process, left off the line: cached_tokens
    # the response's last event has gone out (note_delivered): a client that hangs up now, as the openai SDK does on
    # [DONE] before the body's end, has had the whole answer
    delivered: bool = False


_CURRENT: ContextVar[Access | None] = ContextVar("hearth_access", default=None)


def note(**fields: Any) -> None:
    """Add what a handler knows to the current request's access line; a no-op outside a request (a unit test) or
    when access lines are off. Tasks the request starts share its line: they copy the context, not the line."""
    record = _CURRENT.get()
    if record is not None:
        record.notes.update((k, v) for k, v in fields.items() if v is not None)


def note_delivered() -> None:
    """The current response's last event (a stream's [DONE] or end event) has been sent: from now on a client that
    leaves did not leave early."""
    record = _CURRENT.get()
    if record is not None:
        record.delivered = True


def note_usage(usage: Any) -> None:
    """The token counts of a `usage` object (OpenAI's names, or Anthropic's), when it is one; its cached prompt
    tokens go to the record's details (the router's activity view), not the line."""
    if isinstance(usage, dict):
        note(
            prompt_tokens=_count(usage.get("prompt_tokens", usage.get("input_tokens"))),
            completion_tokens=_count(usage.get("completion_tokens", usage.get("output_tokens"))),
        )
        details = usage.get("prompt_tokens_details")
        cached = _count(
            details.get("cached_tokens") if isinstance(details, dict) else usage.get("cache_read_input_tokens")
        )
        record = _CURRENT.get()
        if record is not None and cached is not None:
            record.details["cached_tokens"] = cached


@contextmanager
def recording(method: str, path: str) -> Iterator[Access]:
    """The current request's record (AccessLog's), or, where no AccessLog made one (its lines are off, or the app
    runs without it), a record of our own for the length of the block, which note() fills the same way."""
    record = _CURRENT.get()
    if record is not None:
        yield record
        return
    record = Access(method, path, time.perf_counter())
    token = _CURRENT.set(record)
    try:
        yield record
    finally:
        _CURRENT.reset(token)


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


ORDER = ("model", "backend", "prompt_tokens", "completion_tokens")


def access_line(record: Access, now: float, ended: bool = True) -> str:
    """`METHOD PATH STATUS MS ms key=value...`; what a client wrote (path, model) is quoted when it holds a
    space or a character that could fake a line."""
    parts = [record.method, _safe(record.path), str(record.status or "-"), f"{(now - record.started) * 1000:.0f} ms"]
    notes = sorted(record.notes.items(), key=lambda kv: ORDER.index(kv[0]) if kv[0] in ORDER else len(ORDER))
    parts += [f"{k}={_safe(str(v))}" for k, v in notes]
    if not ended:
        parts.append("(client gone)" if record.status else "(no response)")
    return " ".join(parts)


def _safe(text: str, limit: int = 300) -> str:
    text = text[:limit]
    return text if text.isprintable() and " " not in text and text else json.dumps(text)


# Paths that supervisors, routers and scrapers poll every few seconds: their lines at DEBUG, unless they fail.
POLLED = frozenset({"/health", "/metrics", "/status", "/queue/status"})


class AccessLog:
    """ASGI middleware: one access line per HTTP request, at INFO on `logger`, when the response has ended."""

    def __init__(self, app: Any, logger: logging.Logger, polled: frozenset[str] = POLLED) -> None:
        self.app = app
        self.log = logger
        self.polled = polled

    async def __call__(self, scope: Mapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self.log.isEnabledFor(
            logging.DEBUG if scope["path"] in self.polled else logging.INFO
        ):
            await self.app(scope, receive, send)
            return
        record = Access(scope["method"], scope["path"], time.perf_counter())
        token = _CURRENT.set(record)

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self._write(record, ended=True)

        try:
            await self.app(scope, receive, sending)
        finally:
            _CURRENT.reset(token)
            self._write(record, ended=record.delivered)

    def _write(self, record: Access, ended: bool) -> None:
        if not record.written:
            record.written = True
            quiet = record.path in self.polled and (record.status or 500) < 500
            self.log.log(
                logging.DEBUG if quiet else logging.INFO, "%s", access_line(record, time.perf_counter(), ended)
            )
