"""Stop strings: cut the text before the first stop string, holding back only a tail that could start one."""

from __future__ import annotations

from dataclasses import dataclass, field


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
        keep = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(text)), keep, -1):
                if text.endswith(s[:n]):
                    keep = n
                    break
        self._held = text[len(text) - keep :]
        return text[: len(text) - keep], False

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held
