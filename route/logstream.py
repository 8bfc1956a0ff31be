"""Following a log file of the stack (`GET /logs/stream?source=NAME`, route/ui.py): its last lines, then the lines
written after, as `tail -F` does (a file that shrinks was truncated or replaced: read again from its start).

Which files: only the stack's own, by name (the catalog lists the log folder and the names, route/catalog.py); a name
is looked up in that list, never joined to a path as given, so nothing outside the folder can be named. The parsing
(`Lines`: bytes in, whole lines out, a partial line held back) does no I/O.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

from route.catalog import LogFiles

BACKLOG = 200  # lines sent when a stream opens
TAIL_BYTES = 256 * 1024  # read at most this much of the end of a file for the backlog
READ_BYTES = 256 * 1024  # read at most this much per poll
MAX_LINE = 8 * 1024  # a longer line is cut (a runaway line must not hold the page)
POLL = 0.25  # seconds between looks at the file


def log_path(logs: LogFiles, name: str) -> Path | None:
    """The file of one of the stack's logs, or None for any other name."""
    return logs.dir / f"{name}.log" if name in logs.names else None


class Lines:
    """Bytes of a log in, its complete lines out (decoded, cut at MAX_LINE); a last partial line waits for the rest."""

    def __init__(self) -> None:
        self._partial = b""

    def feed(self, data: bytes) -> list[str]:
        *whole, self._partial = (self._partial + data).split(b"\n")
        if len(self._partial) > MAX_LINE:  # no newline coming soon: let it out in pieces
            whole.append(self._partial)
            self._partial = b""
        return [line[:MAX_LINE].decode("utf-8", "replace").rstrip("\r") for line in whole]


def last_lines(data: bytes, count: int, cut: bool) -> list[str]:
    """The last `count` complete lines of `data`; `cut`: data starts mid-file, so its first line is partial."""
    lines = Lines().feed(data)
    if cut and lines:
        lines = lines[1:]
    return lines[-count:] if count else []


def _read_from(path: Path, offset: int, limit: int) -> tuple[bytes, int, bool]:
    """Bytes of the file from `offset`, the offset after them, and whether they were read from the start instead
    (the file is now shorter: it was truncated or replaced)."""
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        restarted = size < offset
        if restarted:
            offset = 0
        f.seek(offset)
        data = f.read(limit)
    return data, offset + len(data), restarted


def _tail(path: Path, count: int) -> tuple[list[str], int, bytes]:
    """The last `count` lines, the offset after the last whole line, and the partial line after it."""
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        start = max(0, size - TAIL_BYTES)
        f.seek(start)
        data = f.read(size - start)
    end = data.rfind(b"\n") + 1
    return last_lines(data[:end], count, start > 0), start + end, data[end:]


async def follow(path: Path, backlog: int = BACKLOG, poll: float = POLL) -> AsyncIterator[list[str]]:
    """The last `backlog` lines (possibly none), then after each look at the file (every `poll` seconds) the lines
    written since, possibly none (so a caller can send keep-alives); a missing file has none until it appears."""
    lines = Lines()
    try:
        first, offset, partial = await asyncio.to_thread(_tail, path, backlog)
    except FileNotFoundError:
        first, offset, partial = [], 0, b""
    lines.feed(partial)
    offset += len(partial)
    yield first
    while True:
        await asyncio.sleep(poll)
        try:
            data, offset, restarted = await asyncio.to_thread(_read_from, path, offset, READ_BYTES)
        except FileNotFoundError:
            continue
        if restarted:
            lines = Lines()
        yield lines.feed(data)
