"""Shaping one generation into OpenAI bodies: the whole message, stream deltas, usage. Pure functions.

A `Turn` collects what the engine produced for one request: the raw text, each channel's text (through the
channel parser) and per-channel token counts.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from serve.channels import ANALYSIS, CHANNELS, COMMENTARY, FINAL, ChannelParser, Event, Format

THINKING = (ANALYSIS, COMMENTARY)
LABELS = {ANALYSIS: "[Analysis]", COMMENTARY: "[Commentary]", FINAL: "[Final]"}


@dataclass
class Turn:
    parser: ChannelParser | None  # None: legacy completions, no separation
    raw: str = ""
    texts: dict[str, str] = field(default_factory=dict)
    channel_tokens: Counter[str] = field(default_factory=Counter)
    _last_inline: str | None = None
    _header_tokens: int = 0  # harmony header words, counted to the channel the header opens

    def add(self, piece: str) -> list[Event]:
        """One token's text (possibly empty); returns the channel events it completes."""
        self.raw += piece
        if self.parser is None:
            return [Event(FINAL, piece)] if piece else []
        before = self.parser.channel
        events = self._keep(self.parser.feed(piece))
        if piece.strip() not in self.parser.markers:  # the format's own special tokens count nowhere
            if before is None:
                self._header_tokens += 1
            else:
                self.channel_tokens[before] += 1
        self._settle_header()
        return events

    def finish(self) -> list[Event]:
        events = self._keep(self.parser.finish()) if self.parser else []
        self._settle_header()
        return events

    def _settle_header(self) -> None:
        if self.parser is not None and self.parser.channel is not None and self._header_tokens:
            self.channel_tokens[self.parser.channel] += self._header_tokens
            self._header_tokens = 0

    def _keep(self, events: list[Event]) -> list[Event]:
        for e in events:
            self.texts[e.channel] = self.texts.get(e.channel, "") + e.text
        return events

    @property
    def harmony(self) -> bool:
        return self.parser is not None and self.parser.format is Format.HARMONY

    def inline_delta(self, event: Event) -> str:
        """`separate_thinking: false` streaming text for one event."""
        if not self.harmony:
            return event.text
        prefix = ""
        if event.channel != self._last_inline:
            prefix = ("\n" if self._last_inline else "") + LABELS[event.channel] + "\n"
            self._last_inline = event.channel
        return prefix + event.text


def stream_delta(event: Event, separate: bool, turn: Turn) -> dict[str, Any]:
    if not separate:
        return {"content": turn.inline_delta(event)}
    if event.channel in THINKING:
        return {"reasoning_content": event.text, "reasoning": event.text, "channel": event.channel}
    return {"content": event.text}


def chat_message(turn: Turn, separate: bool, include: list[str] | None) -> dict[str, Any]:
    texts = {c: turn.texts[c].strip() for c in CHANNELS if turn.texts.get(c, "").strip()}
    if not separate:
        if turn.harmony:
            content = "\n".join(f"{LABELS[c]}\n{t}" for c, t in texts.items())
        else:
            content = turn.raw.strip()
        return {"role": "assistant", "content": content}
    message: dict[str, Any] = {"role": "assistant", "content": texts.get(FINAL, "")}
    thinking = {c: texts[c] for c in THINKING if c in texts}
    if thinking:
        joined = "\n\n".join(thinking.values())
        message["reasoning_content"] = message["reasoning"] = joined
        raw = "\n".join(f"{LABELS[c]}\n{t}" for c, t in thinking.items())
        message["thinking"] = {**thinking, "raw": raw}
    message["channels"] = {c: t for c, t in texts.items() if include is None or c in include}
    return message


def usage(turn: Turn, prompt_tokens: int, completion_tokens: int, per_channel: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if per_channel and turn.parser is not None:
        counts = {c: turn.channel_tokens[c] for c in CHANNELS if turn.channel_tokens[c]}
        body["thinking_tokens"] = sum(counts.get(c, 0) for c in THINKING)
        body["channel_tokens"] = counts
    return body
