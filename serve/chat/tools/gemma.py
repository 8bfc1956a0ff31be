"""Gemma 4 calls: `<|tool_call>call:get_weather{city:<|"|>Paris<|"|>,days:3}<tool_call|>`, one or several in a row.

The arguments are Gemma's own object syntax, as its template's `format_argument` writes them: keys bare (or
between `<|"|>` marks), strings between `<|"|>` marks and never escaped, objects `{k:v,...}`, lists `[a,b]`, and
any other value as Jinja prints it (`true`, `3.5`, `None`). They go out as a JSON object as they come: a string
streams, any other scalar once it ends (a top-level argument typed by the tool's schema, typed.py).
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any

from serve.chat.tools.answer import Answer
from serve.chat.tools.events import CallArgs, CallStart, IdMaker, ToolEvent, Tools, merge, openai_id
from serve.chat.tools.typed import typed
from serve.chat.tools.xml import parameter_schemas
from serve.engine.stops import first_marker, partial_tail

OPEN, CLOSE, CALL, QUOTE = "<|tool_call>", "<tool_call|>", "call:", '<|"|>'
WHITESPACE = " \t\r\n"


class State(enum.Enum):
    TEXT = "text"  # answer text
    NAME = "name"  # after <|tool_call>, `call:NAME` up to {
    KEY = "key"  # inside an object: a key up to :
    VALUE = "value"  # a value's first character, or a bare scalar's characters
    STRING = "string"  # between <|"|> marks
    NEXT = "next"  # a value ended: , or a closing bracket follows
    AFTER = "after"  # the arguments closed: <tool_call|> follows


MARKERS = {
    State.TEXT: (OPEN,),
    State.NAME: (QUOTE,),
    State.KEY: (QUOTE,),
    State.VALUE: (QUOTE,),
    State.STRING: (QUOTE,),
    State.NEXT: (QUOTE,),
    State.AFTER: (CLOSE, OPEN),
}


@dataclass
class Container:
    kind: str  # "{" or "["
    first: bool = True  # nothing in it yet (no separator before the next entry)


@dataclass
class GemmaParser:
    tools: Tools | None = None
    new_id: IdMaker = openai_id
    state: State = field(init=False, default=State.TEXT)
    calls: int = field(init=False, default=0)
    _schemas: dict[str, dict[str, Any]] = field(init=False, repr=False)
    _answer: Answer = field(init=False, default_factory=Answer)
    _pending: str = field(init=False, default="")  # a held tail that may start a marker
    _name: str = field(init=False, default="")
    _stack: list[Container] = field(init=False, default_factory=list)
    _key: str = field(init=False, default="")
    _key_quoted: bool = field(init=False, default=False)  # inside a key's <|"|> marks
    _schema: Any = field(init=False, default=None)  # the current top-level argument's
    _scalar: str = field(init=False, default="")

    def __post_init__(self) -> None:
        self._schemas = parameter_schemas(self.tools)

    @property
    def in_json(self) -> bool:
        return self.state is not State.TEXT

    @property
    def in_call(self) -> bool:
        return self.state is not State.TEXT

    def feed(self, text: str) -> list[ToolEvent]:
        out: list[ToolEvent] = []
        text, self._pending = self._pending + text, ""
        while text:
            markers = MARKERS[self.state]
            found = first_marker(text, markers)
            end = found[0] if found else len(text) - partial_tail(text, markers)
            rest = self._plain(text[:end], out)
            if rest is not None:  # the arguments closed part-way: other markers from here
                text = rest + text[end:]
                continue
            if found is None:
                self._pending = text[end:]
                break
            self._marker(found[1], out)
            text = text[end + len(found[1]) :]
        return merge(out)

    def finish(self) -> list[ToolEvent]:
        out: list[ToolEvent] = []
        pending, self._pending = self._pending, ""
        if self.state is State.TEXT:
            if not self.calls:  # after a call, a held partial marker is the next call cut off: dropped
                self._answer.add(pending, out)
        elif self.state is not State.AFTER:
            self._plain(pending, out)
        if self.state is State.NAME and self._name.strip():
            self._start(out)
        if self.state is State.STRING:
            self._emit('"', out)
        elif self.state is State.VALUE:
            if self._scalar.strip():
                self._end_scalar(out)
            elif self._stack and self._stack[-1].kind == "{":
                self._emit("null", out)  # a key with its value cut off
        for c in reversed(self._stack):
            self._emit("}" if c.kind == "{" else "]", out)
        self._stack = []
        self.state = State.TEXT
        return merge(out)

    # -- markers --------------------------------------------------------------------------------------------

    def _marker(self, marker: str, out: list[ToolEvent]) -> None:
        if marker == OPEN:
            self._answer.drop_space()
            self.state, self._name = State.NAME, ""
        elif marker == CLOSE:
            self.state = State.TEXT
        elif self.state is State.KEY:
            self._key_quoted = not self._key_quoted
        elif self.state is State.VALUE and not self._scalar.strip():
            self._begin_value(out)
            self._emit('"', out)
            self.state = State.STRING
        elif self.state is State.STRING:
            self._emit('"', out)
            self.state = State.NEXT
        # a mark anywhere else is a slip: dropped

    # -- text between markers -------------------------------------------------------------------------------

    def _plain(self, text: str, out: list[ToolEvent]) -> str | None:
        """Returns the unconsumed rest when the arguments closed part-way."""
        if not text:
            return None
        if self.state is State.TEXT:
            self._answer.add(text, out)
        elif self.state is State.STRING:
            self._emit(json.dumps(text, ensure_ascii=False)[1:-1], out)
        elif self.state is not State.AFTER:  # AFTER: layout before <tool_call|>
            for i, c in enumerate(text):
                if self._char(c, out):
                    return text[i + 1 :]
        return None

    def _char(self, c: str, out: list[ToolEvent]) -> bool:
        """One character inside a call; True when it closed the arguments."""
        if self.state is State.NAME:
            if c == "{":
                self._start(out)
            else:
                self._name += c
        elif self.state is State.KEY:
            if self._key_quoted:
                self._key += c
            elif c == ":":
                self._open_value(out)
            elif c == "}":
                self._close(out)
            elif c not in WHITESPACE and c != ",":
                self._key += c
        elif self.state is State.VALUE:
            if c in "{[" and not self._scalar.strip():
                self._begin_value(out)
                self._open(c, out)
            elif c in ",}]":
                if self._scalar.strip():
                    self._end_scalar(out)
                elif self._stack[-1].kind == "{":  # `{k:}`: a key without its value
                    self._emit("null", out)
                self._after_value(c, out)
            else:
                self._scalar += c
        elif self.state is State.NEXT and c in ",}]":
            self._after_value(c, out)
        return self._closed()

    def _closed(self) -> bool:
        return self.state is State.AFTER

    # -- the JSON that goes out -----------------------------------------------------------------------------

    def _emit(self, text: str, out: list[ToolEvent]) -> None:
        out.append(CallArgs(self.calls - 1, text))

    def _start(self, out: list[ToolEvent]) -> None:
        index = self.calls
        self.calls += 1
        out.append(CallStart(index, self.new_id(index), self._name.strip().removeprefix(CALL).strip()))
        self._stack = []
        self._open("{", out)

    def _open(self, kind: str, out: list[ToolEvent]) -> None:
        self._emit(kind, out)
        self._stack.append(Container(kind))
        self._enter()

    def _enter(self) -> None:
        """Inside the innermost container: a key (object) or a value (list) comes next."""
        if self._stack[-1].kind == "{":
            self.state, self._key, self._key_quoted = State.KEY, "", False
        else:
            self.state, self._scalar, self._schema = State.VALUE, "", None

    def _begin_value(self, out: list[ToolEvent]) -> None:
        """A list's entry starts: its separator goes out (an object's went out with the key)."""
        top = self._stack[-1]
        if top.kind == "[":
            if not top.first:
                self._emit(", ", out)
            top.first = False

    def _open_value(self, out: list[ToolEvent]) -> None:
        top = self._stack[-1]
        sep = "" if top.first else ", "
        top.first = False
        self._emit(f"{sep}{json.dumps(self._key.strip(), ensure_ascii=False)}: ", out)
        name = self._name.strip().removeprefix(CALL).strip()
        self._schema = self._schemas.get(name, {}).get(self._key.strip()) if len(self._stack) == 1 else None
        self.state, self._scalar, self._key = State.VALUE, "", ""

    def _end_scalar(self, out: list[ToolEvent]) -> None:
        self._begin_value(out)
        value = typed(self._scalar.strip(), self._schema)
        self._emit(json.dumps(value, ensure_ascii=False), out)
        self._scalar = ""

    def _after_value(self, c: str, out: list[ToolEvent]) -> None:
        if c == ",":
            self._enter()
        else:
            self._close(out)

    def _close(self, out: list[ToolEvent]) -> None:
        top = self._stack.pop()
        self._emit("}" if top.kind == "{" else "]", out)
        self.state = State.NEXT if self._stack else State.AFTER
