"""Watches a passing SSE byte stream for its end and in-band errors, without changing it. No I/O.

A stream ends with `data: [DONE]` (OpenAI chat and completions) or, on the paths of APIs without it, with a named
terminal event (Anthropic's `message_stop` or `error`; Responses' `response.completed`, `.incomplete`, `.failed`)."""

from __future__ import annotations

import json

from hearth_common import anthropic_errors, ollama_errors
from hearth_common.errors import error_json

MAX_PENDING = 1 << 20  # an unterminated "event" longer than this is garbage, not SSE
RESPONSES_PATH = "/v1/responses"
ANTHROPIC_END = frozenset({b"message_stop", b"error"})
RESPONSES_END = frozenset({b"response.completed", b"response.incomplete", b"response.failed"})


def terminal_events(path: str) -> frozenset[bytes]:
    """The named SSE events that end a stream on this path (none: it ends with `[DONE]`)."""
    if anthropic_errors.owns(path):
        return ANTHROPIC_END
    return RESPONSES_END if path == RESPONSES_PATH else frozenset()


class SseWatch:
    """feed() every chunk as it passes; then `done` says whether [DONE] came, `error` holds an in-band error and
    `usage` the stream's usage object, if it sent one (stream_options.include_usage)."""

    def __init__(self, terminal: frozenset[bytes] = frozenset()) -> None:
        self._terminal = terminal  # named events that end the stream besides [DONE] (terminal_events)
        self._pending = b""
        self.done = False
        self.error: str | None = None
        self.usage: dict[str, object] | None = None

    def feed(self, chunk: bytes) -> None:
        data = self._pending + chunk if self._pending else chunk
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        events = data.split(b"\n\n")
        pending = events.pop()
        self._pending = pending if len(pending) <= MAX_PENDING else b""
        for event in events:
            self._event(event)

    def _event(self, event: bytes) -> None:
        kind = b"message"
        for line in event.split(b"\n"):
            if line.startswith(b"event:"):
                kind = line[6:].strip()
                if kind in self._terminal:
                    self.done = True
            elif line.startswith(b"data:"):
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    self.done = True
                elif kind == b"error" or b'"error"' in payload:
                    self._maybe_error(payload, kind == b"error")
                elif b'"usage"' in payload:
                    self._maybe_usage(payload)

    def _maybe_error(self, payload: bytes, flagged: bool) -> None:
        try:
            obj = json.loads(payload)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and "error" in obj:
            err = obj["error"]
            message = err.get("message") if isinstance(err, dict) else err
            self.error = str(message or "error")
        elif flagged:
            self.error = payload.decode(errors="replace")[:200] or "error"

    def _maybe_usage(self, payload: bytes) -> None:
        try:
            obj = json.loads(payload)
        except ValueError:
            return
        usage = obj.get("usage") if isinstance(obj, dict) else None
        if isinstance(usage, dict):
            self.usage = usage


def error_event(message: str, code: str = "upstream_error", path: str = "/v1/chat/completions") -> bytes:
    """The SSE events that end a stream the backend cut, in the path's API: an OpenAI error object then [DONE];
    Anthropic's `error` event; Responses' `error` event; on Ollama's paths (NDJSON), an `{"error": ...}` line."""
    if ollama_errors.owns(path):
        return ollama_errors.error_line(message)
    if anthropic_errors.owns(path):
        return anthropic_errors.error_event(message)
    if path == RESPONSES_PATH:
        body = {"type": "error", "code": code, "message": message, "param": None}
        return b"event: error\ndata: " + json.dumps(body).encode() + b"\n\n"
    return b"data: " + error_json(message, "server_error", code) + b"\n\ndata: [DONE]\n\n"
