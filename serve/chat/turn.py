"""One generation's text as it arrives: the raw text, the channel parser's events, and per-channel token counts.

API-neutral (serve/chat/core.py drives it). Counting: a token counts to the channel its text went to; the format's
own special tokens count nowhere; harmony header words count to the channel their header opens (or to
`tool_calls` when the header addresses a tool); tokens of call markup count to `tool_calls`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from serve.chat.channels import ChannelParser, Event, Format

TOOL_CALLS = "tool_calls"  # the token count key of call markup


@dataclass
class Turn:
    parser: ChannelParser | None  # None: legacy completions, no separation
    calls_active: bool = False  # harmony: a message with a recipient is a call, counted apart
    raw: str = ""
    channel_tokens: Counter[str] = field(default_factory=Counter)
    _header_tokens: int = 0  # harmony header words, counted to the channel the header opens

    @property
    def channel(self) -> str | None:
        return self.parser.channel if self.parser else None

    @property
    def in_addressed_message(self) -> bool:
        return self.calls_active and self.parser is not None and self.parser.recipient is not None

    def feed(self, piece: str) -> list[Event]:
        """One token's text (possibly empty): the channel events it completes. Counting is `count`'s job."""
        self.raw += piece
        return self.parser.feed(piece) if self.parser else []

    def feed_raw(self, piece: str) -> None:
        """Text the channel parser must not read (a marker inside a call's arguments is only text)."""
        self.raw += piece

    def count(self, piece: str, channel_before: str | None, as_call: bool = False) -> None:
        """Count one token, fed while the parser was in `channel_before`."""
        if self.parser is None or piece.strip() in self.parser.markers:
            self._settle_header()
            return
        if as_call:
            self.channel_tokens[TOOL_CALLS] += 1
        elif channel_before is None:
            self._header_tokens += 1
        else:
            self.channel_tokens[channel_before] += 1
        self._settle_header()

    def finish(self) -> list[Event]:
        events = self.parser.finish() if self.parser else []
        self._settle_header()
        return events

    def _settle_header(self) -> None:
        if self.parser is not None and self.parser.channel is not None and self._header_tokens:
            key = TOOL_CALLS if self.in_addressed_message else self.parser.channel
            self.channel_tokens[key] += self._header_tokens
            self._header_tokens = 0

    @property
    def harmony(self) -> bool:
        return self.parser is not None and self.parser.format is Format.HARMONY
