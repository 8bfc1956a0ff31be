"""Where a request's work before admission runs (rendering the template, tokenizing): on the event loop when
the request is small, in a worker thread when it is big.

A thread keeps a big request (a long conversation, a large tool list) from holding every stream's next chunk.
For a small one the hop costs more than the work: under load the worker waits for a core and for the GIL (up to
the switch interval) while llama.cpp's threads and the decode thread run, and the request's first token
waited milliseconds for a tokenization of tens of microseconds (bench/anatomy.py measures admission; the
figures are in bench/RESULTS.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextvars import ContextVar
from typing import TypeVar

T = TypeVar("T")

INLINE_MAX = 16 * 1024  # request body bytes up to which the work stays on the event loop

_size: ContextVar[int | None] = ContextVar("hearth_request_size", default=None)


def note_size(size: int) -> None:
    """The current request's body size (bytes), read when it is parsed."""
    _size.set(size)


async def run(fn: Callable[..., T], *args: object) -> T:
    """`fn(*args)` inline for a request noted as small, else (big, or size unknown) in a worker thread."""
    size = _size.get()
    if size is not None and size <= INLINE_MAX:
        return fn(*args)
    return await asyncio.to_thread(fn, *args)
