"""The router's recent requests for the web page (route/ui.py): a bounded ring, filled by an ASGI middleware at the
moment the request's access line is written (its response has ended), from the same record the access line reads
(hearth_common.logs: method, path, status, model, backend, token counts) plus the cached prompt tokens.

Nothing of a request's content is kept: no prompt, no answer, no header. The page's own traffic (/ui/, /logs/) and
the paths pollers hit every few seconds are left out, so the ring shows what clients asked.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from hearth_common.logs import POLLED, Access, recording

RING_SIZE = 200
SKIPPED_PREFIXES = ("/ui", "/logs/")


@dataclass(frozen=True)
class Request:
    """One finished request as the page shows it."""

    time: float  # wall-clock seconds when it came in
    method: str
    path: str
    status: int | None  # None: no response was started (the client left first)
    ms: float
    model: str | None
    backend: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    cached_tokens: int | None
    ended: bool  # False: the client left before the end of the response

    def view(self) -> dict[str, Any]:
        return asdict(self)


def finished(record: Access, began: float, now: float, ended: bool) -> Request:
    notes, details = record.notes, record.details
    return Request(
        time=began,
        method=record.method,
        path=record.path[:300],
        status=record.status,
        ms=round((now - record.started) * 1000, 1),
        model=notes.get("model"),
        backend=notes.get("backend"),
        prompt_tokens=notes.get("prompt_tokens"),
        completion_tokens=notes.get("completion_tokens"),
        cached_tokens=details.get("cached_tokens"),
        ended=ended,
    )


class Ring:
    """The last `size` requests, newest last; `version` counts additions (a watcher compares it)."""

    def __init__(self, size: int = RING_SIZE) -> None:
        self._items: deque[Request] = deque(maxlen=size)
        self.version = 0

    def add(self, item: Request) -> None:
        self._items.append(item)
        self.version += 1

    def newest_first(self, limit: int | None = None) -> list[dict[str, Any]]:
        items = list(reversed(self._items))
        return [r.view() for r in items[:limit]]


def recorded(path: str) -> bool:
    return path not in POLLED and not path.startswith(SKIPPED_PREFIXES)


class Activity:
    """ASGI middleware: each HTTP request that `recorded()` keeps goes into `ring` when its response ends (or the
    client leaves). Installed inside AccessLog, it shares its record; without one it keeps a record of its own."""

    def __init__(self, app: Any, ring: Ring) -> None:
        self.app = app
        self.ring = ring

    async def __call__(self, scope: Mapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not recorded(scope["path"]):
            await self.app(scope, receive, send)
            return
        began = time.time()
        with recording(scope["method"], scope["path"]) as record:
            done = False

            async def sending(message: dict[str, Any]) -> None:
                nonlocal done
                if message["type"] == "http.response.start" and record.status is None:
                    record.status = message["status"]  # AccessLog, when outside, sets it too (the same value)
                await send(message)
                if message["type"] == "http.response.body" and not message.get("more_body", False) and not done:
                    done = True
                    self.ring.add(finished(record, began, time.perf_counter(), ended=True))

            try:
                await self.app(scope, receive, sending)
            finally:
                if not done:
                    done = True
                    self.ring.add(finished(record, began, time.perf_counter(), ended=record.delivered))
