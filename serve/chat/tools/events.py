"""What a tool-call parser emits: answer text, a call's start (index, id, name), and its argument fragments.

The same three events reach every API renderer (serve/chat/core.py passes them on unchanged), so they live here,
in the package that produces them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from serve.chat import ids


@dataclass(frozen=True)
class Content:
    """Answer text outside any call."""

    text: str


@dataclass(frozen=True)
class CallStart:
    index: int  # 0, 1, ... in the order the calls appear in this answer
    id: str
    name: str


@dataclass(frozen=True)
class CallArgs:
    """A fragment of the call's arguments; the fragments of one call join into its JSON text."""

    index: int
    text: str


ToolEvent = Content | CallStart | CallArgs
IdMaker = Callable[[int], str]
Tools = list[dict[str, Any]]  # the request's tool objects (a parser reads their parameter schemas)


class CallParser(Protocol):
    """What the chat core drives: answer text in, events out, split anywhere."""

    @property
    def in_json(self) -> bool:
        """Inside a call, where every character is the call's (a `<think>` there is text of the arguments)."""

    @property
    def in_call(self) -> bool:
        """Inside call markup (for counting its tokens apart from the answer's)."""

    def feed(self, text: str) -> list[ToolEvent]: ...

    def finish(self) -> list[ToolEvent]: ...


def openai_id(index: int) -> str:
    """OpenAI's shape: call_ + 24 random hex digits."""
    return f"call_{ids.hex_id(12)}"


def mistral_id(index: int) -> str:
    """Mistral's templates refuse any id that is not 9 letters and digits."""
    return ids.alnum_id(9)


def merge(events: list[ToolEvent]) -> list[ToolEvent]:
    """Join neighbouring Content events and neighbouring argument fragments of one call."""
    out: list[ToolEvent] = []
    for e in events:
        last = out[-1] if out else None
        if isinstance(e, Content) and isinstance(last, Content):
            out[-1] = Content(last.text + e.text)
        elif isinstance(e, CallArgs) and isinstance(last, CallArgs) and last.index == e.index:
            out[-1] = CallArgs(e.index, last.text + e.text)
        else:
            out.append(e)
    return out
