"""Stored responses for `previous_response_id`: a bounded in-memory LRU, one per model server.

A response created with `store` (OpenAI's default: true) keeps its conversation (the earlier turns, its
input, its output, as chat messages; not its instructions, which OpenAI does not carry over either) under
its id. Bounded by count and by the conversations' JSON size: the least recently used go first, and one
conversation larger than the whole budget is not kept. Lost on restart, and held by one server only, unless the
server is given the shared state (serve/api/responses_shared.py; both are Responses).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Protocol

MAX_ITEMS = 1024
MAX_BYTES = 64 * 2**20

Messages = list[dict[str, Any]]


class Responses(Protocol):
    """Where /v1/responses keeps and finds conversations."""

    @property
    def where(self) -> str: ...
    async def save(self, response_id: str, messages: Messages) -> None: ...
    async def fetch(self, response_id: str) -> Messages | None: ...
    async def close(self) -> None: ...


@dataclass
class ResponseStore:
    max_items: int = MAX_ITEMS
    max_bytes: int = MAX_BYTES
    _items: OrderedDict[str, tuple[str, int]] = field(default_factory=OrderedDict)
    _bytes: int = 0

    def put(self, response_id: str, messages: Messages) -> None:
        text = json.dumps(messages)
        size = len(text.encode())
        if size > self.max_bytes or self.max_items == 0:
            return
        self._drop(response_id)
        self._items[response_id] = (text, size)
        self._bytes += size
        while len(self._items) > self.max_items or self._bytes > self.max_bytes:
            self._drop(next(iter(self._items)))

    @property
    def where(self) -> str:
        return f"in memory, the last {self.max_items}, on this server only"

    async def save(self, response_id: str, messages: Messages) -> None:
        self.put(response_id, messages)

    async def fetch(self, response_id: str) -> Messages | None:
        return self.get(response_id)

    async def close(self) -> None:
        pass

    def get(self, response_id: str) -> Messages | None:
        """The conversation up to and including that response (a fresh copy), or None when not held."""
        entry = self._items.get(response_id)
        if entry is None:
            return None
        self._items.move_to_end(response_id)
        return json.loads(entry[0])

    def __len__(self) -> int:
        return len(self._items)

    @property
    def bytes(self) -> int:
        return self._bytes

    def _drop(self, response_id: str) -> None:
        entry = self._items.pop(response_id, None)
        if entry is not None:
            self._bytes -= entry[1]
