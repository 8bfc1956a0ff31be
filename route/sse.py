"""Watches a passing SSE byte stream for `[DONE]` and in-band errors, without changing it. No I/O."""

from __future__ import annotations

import json

from hearth_common.errors import error_json

MAX_PENDING = 1 << 20  # an unterminated "event" longer than this is garbage, not SSE


class SseWatch:
    """feed() every chunk as it passes; then `done` says whether [DONE] came and `error` holds an in-band error."""

    def __init__(self) -> None:
        self._pending = b""
        self.done = False
        self.error: str | None = None

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
            elif line.startswith(b"data:"):
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    self.done = True
                elif kind == b"error" or b'"error"' in payload:
                    self._maybe_error(payload, kind == b"error")

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


def error_event(message: str, code: str = "upstream_error") -> bytes:
    """The SSE events that end a stream the backend cut: an OpenAI error object, then [DONE]."""
    return b"data: " + error_json(message, "server_error", code) + b"\n\ndata: [DONE]\n\n"
