"""Pieces shared by the parsers of formats that write calls as markup around text (xml.py, pythonic.py,
gemma.py): the answer text between calls (finding a state's first marker is serve/engine/stops.first_marker)."""

from __future__ import annotations

from dataclasses import dataclass, field

from serve.chat.tools.events import Content, ToolEvent
from serve.chat.tools.jsonscan import WHITESPACE


@dataclass
class Answer:
    """Answer text outside calls, as the table-driven parser gives it: no whitespace leads, none trails, none
    stands between calls (what is held goes out once more text follows it)."""

    _space: str = field(default="")
    _said: bool = field(default=False)

    def add(self, text: str, out: list[ToolEvent]) -> None:
        text = self._space + text
        body = text.rstrip(WHITESPACE)
        self._space = text[len(body) :]
        if not self._said:
            body = body.lstrip(WHITESPACE)
        if body:
            self._said = True
            out.append(Content(body))

    def drop_space(self) -> None:
        """A call starts: the whitespace before it is layout."""
        self._space = ""
