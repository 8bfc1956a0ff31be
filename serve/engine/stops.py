"""Stop strings: cut the text before the first stop string, holding back only a tail that could start one."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


def partial_tail(text: str, markers: Iterable[str]) -> int:
    """The length of the longest end of `text` that is the start of a marker (but not a whole one): what a
    stream holds back until the next piece says whether the marker follows. Shared with the channel parser."""
    keep = 0
    for m in markers:
        for n in range(min(len(m) - 1, len(text)), keep, -1):
            if text.endswith(m[:n]):
                keep = n
                break
    return keep


def first_marker(text: str, markers: Iterable[str]) -> tuple[int, str] | None:
    """The earliest marker in `text` (the longest at a tie), with its position. Shared with the channel parser and the
    call parsers."""
    best: tuple[int, str] | None = None
    for m in markers:
        i = text.find(m)
        if i != -1 and (best is None or i < best[0] or (i == best[0] and len(m) > len(best[1]))):
            best = (i, m)
    return best


@dataclass
class StopFilter:
    stops: tuple[str, ...]
    hit: str | None = field(default=None, init=False)  # the stop string that ended the text (Anthropic reports it)
    _held: str = field(default="", init=False)

    def feed(self, text: str) -> tuple[str, bool]:
        """(text safe to emit, whether a stop string was hit). After a hit, the rest is discarded."""
        text = self._held + text
        self._held = ""
        hits = [(i, s) for s in self.stops if (i := text.find(s)) != -1]
        if hits:
            at, self.hit = min(hits, key=lambda h: h[0])
            return text[:at], True
        keep = partial_tail(text, self.stops)
        self._held = text[len(text) - keep :]
        return text[: len(text) - keep], False

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held
