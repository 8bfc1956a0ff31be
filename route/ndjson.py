"""Watches a passing NDJSON byte stream (Ollama's /api/chat and /api/generate) for its end and in-band errors,
without changing it. No I/O; the same face as route/sse.py's SseWatch, so the proxy relays either.

A stream ends with a line whose `done` is true; a line with an `error` field is an error (Ollama's in-band error,
after which the stream ends)."""

from __future__ import annotations

import json

MAX_PENDING = 1 << 20  # an unterminated line longer than this is garbage


class NdjsonWatch:
    def __init__(self) -> None:
        self._pending = b""
        self.done = False
        self.error: str | None = None
        self.usage: dict[str, object] | None = None  # Ollama streams carry counters, not an OpenAI usage object

    def feed(self, chunk: bytes) -> None:
        data = self._pending + chunk if self._pending else chunk
        lines = data.split(b"\n")
        pending = lines.pop()
        self._pending = pending if len(pending) <= MAX_PENDING else b""
        for line in lines:
            if b'"done"' in line or b'"error"' in line:
                self._line(line)

    def _line(self, line: bytes) -> None:
        try:
            obj = json.loads(line)
        except ValueError:
            return
        if not isinstance(obj, dict):
            return
        if "error" in obj:
            self.error = str(obj["error"] or "error")
            self.done = True  # an error line ends an Ollama stream: nothing is missing after it
        elif obj.get("done") is True:
            self.done = True
