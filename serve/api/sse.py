"""Server-sent events as bytes: whole chunks, and frames for the chunk a stream sends once per token.

A stream's token chunks differ only in one string (the text), so a Frame encodes the chunk once with a slot
where that string goes and then fills in each token's text: the bytes equal `data(chunk)` with the text in the
slot, without building and JSON-encoding the whole object for every token on the event loop (which shares the
two cores with llama.cpp's threads).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

SLOT = "\x00hearth-slot\x00"  # where the varying string goes (no client text can equal its JSON form: see Frame)
_SLOT_JSON = json.dumps(SLOT).encode()
DONE = b"data: [DONE]\n\n"


def data(chunk: Any) -> bytes:
    """An unnamed event (OpenAI's chunks)."""
    return f"data: {json.dumps(chunk)}\n\n".encode()


def event(name: str, body: Any) -> bytes:
    """A named event (Anthropic's and Responses' streams)."""
    return f"event: {name}\ndata: {json.dumps(body)}\n\n".encode()


async def named(events: AsyncGenerator[tuple[str, Any], None]) -> AsyncGenerator[bytes, None]:
    """A stream of (name, body) events as bytes (Anthropic's and Responses' streams: no [DONE])."""
    async with aclosing(events) as stream:
        async for name, body in stream:
            yield event(name, body)


class Frame:
    """`chunk` with SLOT in one or more places; `fill(text)` is `data(chunk)` with `text` in every slot. JSON escapes the slot's NUL characters, and the encoded text is spliced in after
    splitting, so a text containing the slot's characters cannot split anything."""

    __slots__ = ("_parts",)

    def __init__(self, chunk: Any) -> None:
        self._parts = data(chunk).split(_SLOT_JSON)
        if len(self._parts) < 2:
            raise ValueError("a frame's chunk has no SLOT")

    def fill(self, text: str) -> bytes:
        return json.dumps(text).encode().join(self._parts)
