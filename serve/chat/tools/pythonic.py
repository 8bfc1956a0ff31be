"""Pythonic calls (LFM2.5): `<|tool_call_start|>[get_weather(city='Paris', days=3), ping()]<|tool_call_end|>`.

Each call is a Python function call with keyword arguments whose values are Python literals (the template writes
strings in quotes, objects as JSON, anything else as Python's `str`). The arguments go out as a JSON object, one
argument at a time, once its value ends (a `,` or `)` outside any quote or bracket): a Python literal becomes
the JSON value it stands for (`True` true, `None` null, a tuple an array); a value that is no literal is taken
as JSON, else as text.
"""

from __future__ import annotations

import ast
import enum
import json
from dataclasses import dataclass, field
from typing import Any

from serve.chat.tools.answer import Answer
from serve.chat.tools.events import CallArgs, CallStart, IdMaker, ToolEvent, Tools, merge, openai_id
from serve.engine.stops import first_marker, partial_tail

OPEN, CLOSE = "<|tool_call_start|>", "<|tool_call_end|>"


class State(enum.Enum):
    TEXT = "text"  # answer text
    LIST = "list"  # inside the markers, between calls
    NAME = "name"  # a function's name, up to (
    KEY = "key"  # an argument's name, up to =
    VALUE = "value"
    END = "end"  # after the list's ], up to the closing marker


NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def literal(text: str) -> Any:
    """The JSON value a Python literal stands for."""
    text = text.strip()
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return json.loads(json.dumps(value, default=lambda v: list(v) if isinstance(v, set | frozenset) else str(v)))


@dataclass
class PythonicParser:
    tools: Tools | None = None  # unused: the literals carry their types
    new_id: IdMaker = openai_id
    state: State = field(init=False, default=State.TEXT)
    calls: int = field(init=False, default=0)
    _answer: Answer = field(init=False, default_factory=Answer)
    _pending: str = field(init=False, default="")
    _name: str = field(init=False, default="")
    _key: str = field(init=False, default="")
    _first: bool = field(init=False, default=True)
    _value: list[str] = field(init=False, default_factory=list)
    _quote: str = field(init=False, default="")
    _escape: bool = field(init=False, default=False)
    _depth: int = field(init=False, default=0)

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
            if self.state in (State.TEXT, State.END):
                marker = OPEN if self.state is State.TEXT else CLOSE
                found = first_marker(text, (marker,))
                if found is None:
                    keep = partial_tail(text, (marker,))
                    if self.state is State.TEXT:
                        self._answer.add(text[: len(text) - keep], out)
                    self._pending = text[len(text) - keep :]
                    break
                pos, _ = found
                if self.state is State.TEXT:
                    self._answer.add(text[:pos], out)
                    self._answer.drop_space()
                self.state = State.LIST if self.state is State.TEXT else State.TEXT
                text = text[pos + len(marker) :]
            else:
                for i, c in enumerate(text):
                    if self._char(c, out):  # the list ended: markers again from here
                        text = text[i + 1 :]
                        break
                else:
                    text = ""
        return merge(out)

    def finish(self) -> list[ToolEvent]:
        out: list[ToolEvent] = []
        pending, self._pending = self._pending, ""
        if self.state is State.TEXT and not self.calls:
            self._answer.add(pending, out)
        if self.state is State.NAME and self._name.strip():
            self._start(out)
        if self.state is State.VALUE:
            self._end_value(out)
        if self.state in (State.KEY, State.VALUE):
            out.append(CallArgs(self.calls - 1, "}"))
        self.state = State.TEXT
        return merge(out)

    def _char(self, c: str, out: list[ToolEvent]) -> bool:
        """One character inside the markers; True when it ended the list."""
        if self.state is State.LIST:
            if c in NAME_CHARS:
                self.state, self._name = State.NAME, c
            elif c == "]":
                self.state = State.END
                return True
        elif self.state is State.NAME:
            if c == "(":
                self._start(out)
            elif c in NAME_CHARS:
                self._name += c
        elif self.state is State.KEY:
            if c == "=":
                sep = "" if self._first else ", "
                self._first = False
                out.append(CallArgs(self.calls - 1, f"{sep}{json.dumps(self._key.strip(), ensure_ascii=False)}: "))
                self.state, self._value, self._quote, self._escape, self._depth = State.VALUE, [], "", False, 0
            elif c == ")":
                out.append(CallArgs(self.calls - 1, "}"))
                self.state = State.LIST
            elif c != ",":
                self._key += c
        else:
            self._value_char(c, out)
        return False

    def _value_char(self, c: str, out: list[ToolEvent]) -> None:
        if self._quote:
            if self._escape:
                self._escape = False
            elif c == "\\":
                self._escape = True
            elif c == self._quote:
                self._quote = ""
        elif c in "'\"":
            self._quote = c
        elif c in "([{":
            self._depth += 1
        elif c in ")]}" and self._depth:
            self._depth -= 1
        elif c in ",)" and not self._depth:
            self._end_value(out)
            if c == ")":
                out.append(CallArgs(self.calls - 1, "}"))
                self.state = State.LIST
            else:
                self.state, self._key = State.KEY, ""
            return
        self._value.append(c)

    def _start(self, out: list[ToolEvent]) -> None:
        index = self.calls
        self.calls += 1
        out.append(CallStart(index, self.new_id(index), self._name.strip()))
        out.append(CallArgs(index, "{"))
        self.state, self._key, self._first = State.KEY, "", True

    def _end_value(self, out: list[ToolEvent]) -> None:
        value = literal("".join(self._value))
        out.append(CallArgs(self.calls - 1, json.dumps(value, ensure_ascii=False)))


def calls_text(calls: list[dict[str, Any]]) -> str:
    """A history turn's calls as LFM2.5's template writes them (for LFM2 templates, which list tools but leave
    the calls to the assistant's text): strings in single quotes as they are, objects as JSON, anything else as
    Python's `str`."""

    def value(v: Any) -> str:
        if isinstance(v, str):
            return f"'{v}'"
        if isinstance(v, dict):
            return json.dumps(v, ensure_ascii=False)
        return str(v)

    def one(call: dict[str, Any]) -> str:
        fn = call["function"]
        args = fn["arguments"] if isinstance(fn["arguments"], dict) else {}
        return f"{fn['name']}(" + ", ".join(f"{k}={value(v)}" for k, v in args.items()) + ")"

    return f"{OPEN}[" + ", ".join(one(c) for c in calls) + f"]{CLOSE}"
