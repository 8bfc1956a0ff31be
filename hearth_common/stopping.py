"""SIGTERM as Ctrl-C until a server's own handlers take over: converting or loading unwinds through `finally`
blocks (a conversion removes its temporary file) and the program says one line, instead of dying mid-write."""

from __future__ import annotations

import signal
from types import FrameType


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def sigterm_as_interrupt() -> None:
    signal.signal(signal.SIGTERM, _interrupt)
