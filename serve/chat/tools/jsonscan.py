"""Incremental JSON scanning for tool calls: where a value ends, and a call object's name and arguments.

Both scanners take text in any split and keep only a few flags between pieces (nesting depth, inside a
string, after a backslash), so a call's arguments can be passed on as they are generated. They check
structure, not full JSON syntax: a call held by the tool grammar is valid JSON, and one that is not still
ends where its brackets close.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field

WHITESPACE = " \t\r\n"
SCALAR_END = ",}]" + WHITESPACE


class Kind(enum.Enum):
    CONTAINER = "container"  # an object or an array
    STRING = "string"
    SCALAR = "scalar"  # number, true, false, null


@dataclass
class ValueScanner:
    """One JSON value. `feed` returns (characters consumed, the value's text among them); leading whitespace
    is consumed but is not the value's text. A scalar ends at the first delimiter, which it does not consume."""

    kind: Kind | None = None
    done: bool = False
    depth: int = 0
    in_string: bool = False
    escaped: bool = False

    def feed(self, text: str) -> tuple[int, str]:
        start = None
        for i, c in enumerate(text):
            if self.kind is None:
                if c in WHITESPACE:
                    continue
                self.kind = Kind.CONTAINER if c in "{[" else Kind.STRING if c == '"' else Kind.SCALAR
                start = i
                if self.kind is Kind.STRING:
                    self.in_string = True
                    continue
                if self.kind is Kind.SCALAR and c in SCALAR_END:  # an empty value: `"arguments": }`
                    self.done = True
                    return i, ""
            if start is None:
                start = i
            if self._step(c):
                self.done = True
                if self.kind is Kind.SCALAR:
                    return i, text[start:i]
                return i + 1, text[start : i + 1]
        return len(text), text[start:] if start is not None else ""

    def finish(self) -> None:
        self.done = True

    def _step(self, c: str) -> bool:
        """Take one character of the value; True when it was the value's last (or, for a scalar, past it)."""
        if self.in_string:
            if self.escaped:
                self.escaped = False
            elif c == "\\":
                self.escaped = True
            elif c == '"':
                self.in_string = False
                return self.kind is Kind.STRING
            return False
        if self.kind is Kind.SCALAR:
            return c in SCALAR_END
        if c == '"':
            self.in_string = True
        elif c in "{[":
            self.depth += 1
        elif c in "}]":
            self.depth -= 1
            return self.depth == 0
        return False


class Part(enum.Enum):
    OPEN = "open"  # before the object's '{'
    KEY = "key"  # expecting a key, ',' or '}'
    IN_KEY = "in_key"
    COLON = "colon"
    VALUE = "value"
    DONE = "done"
    INVALID = "invalid"


@dataclass(frozen=True)
class Found:
    """What a call object revealed: its name, a fragment of its arguments, or its end."""

    what: str  # "name", "args", "end"
    text: str = ""


@dataclass
class CallScanner:
    """A call object `{"name": ..., "arguments": {...}, ...}`: reports the name when its string closes and the
    arguments' text as it arrives (an arguments value given as a JSON string is decoded when it closes).
    Other keys are skipped. `raw` keeps everything consumed, for a caller that learns it was no call."""

    name_keys: tuple[str, ...] = ("name",)
    args_keys: tuple[str, ...] = ("arguments", "parameters")
    keyed: bool = False  # {"NAME": {...}}: the first key names the tool and holds its arguments (Apertus)
    part: Part = Part.OPEN
    raw: str = ""
    name: str | None = None
    _key: str = ""
    _key_escaped: bool = False
    _value: ValueScanner = field(default_factory=ValueScanner)
    _value_text: str = ""
    _args_seen: bool = False

    @property
    def finished(self) -> bool:
        return self.part in (Part.DONE, Part.INVALID)

    def feed(self, text: str) -> tuple[int, list[Found]]:
        """(characters consumed, findings). Stops after the object's closing '}' or at the first character
        that cannot belong to a call object (then `part` is INVALID and that character is not consumed)."""
        found: list[Found] = []
        i = 0
        while i < len(text) and not self.finished:
            if self.part is Part.VALUE:
                used, piece = self._value.feed(text[i:])
                self._take_value(piece, found)
                i += used
                if self._value.done:
                    self._end_value(found)
                continue
            c = text[i]
            if not self._char(c, found):
                self.part = Part.INVALID
                break
            i += 1
        self.raw += text[:i]
        return i, found

    def finish(self) -> list[Found]:
        """The text ended inside the object: close what can be closed."""
        found: list[Found] = []
        if self.part is Part.VALUE:
            self._value.finish()
            self._end_value(found)
        return found

    def _char(self, c: str, found: list[Found]) -> bool:
        if self.part is Part.OPEN:
            if c == "{":
                self.part = Part.KEY
            return c == "{" or c in WHITESPACE
        if self.part is Part.KEY:
            if c == '"':
                self.part, self._key = Part.IN_KEY, ""
            elif c == "}":
                self.part = Part.DONE
                if self.name is not None and not self._args_seen:
                    found.append(Found("args", "{}"))
                found.append(Found("end"))
            return c in '"},' or c in WHITESPACE
        if self.part is Part.IN_KEY:
            if self._key_escaped:
                self._key_escaped = False
            elif c == "\\":
                self._key_escaped = True
            elif c == '"':
                self.part = Part.COLON
                if self.keyed and self.name is None:
                    self.name = self._key_name
                    found.append(Found("name", self.name))
                return True
            self._key += c
            return True
        if self.part is Part.COLON:
            if c == ":":
                self.part, self._value, self._value_text = Part.VALUE, ValueScanner(), ""
            return c == ":" or c in WHITESPACE
        return False

    @property
    def _key_name(self) -> str:
        try:
            return json.loads(f'"{self._key}"')
        except json.JSONDecodeError:
            return self._key

    def _holds_args(self, key: str) -> bool:
        return key in self.args_keys or (self.keyed and key == self.name)

    def _streams_args(self) -> bool:
        return self._holds_args(self._key_name) and self._value.kind is Kind.CONTAINER

    def _take_value(self, piece: str, found: list[Found]) -> None:
        if not piece:
            return
        if self._streams_args():
            self._args_seen = True
            found.append(Found("args", piece))
        else:
            self._value_text += piece

    def _end_value(self, found: list[Found]) -> None:
        key = self._key_name
        self.part = Part.KEY
        if key in self.name_keys and self._value.kind is Kind.STRING and self.name is None and not self.keyed:
            self.name = _decode_string(self._value_text)
            found.append(Found("name", self.name))
        elif self._holds_args(key) and not self._streams_args() and not self._args_seen:
            self._args_seen = True
            text = self._value_text
            if self._value.kind is Kind.STRING:  # arguments sent as a JSON string holding JSON
                text = _decode_string(text)
            found.append(Found("args", text.strip() or "{}"))


def _decode_string(literal: str) -> str:
    try:
        value = json.loads(literal)
    except json.JSONDecodeError:
        return literal.strip('"')
    return value if isinstance(value, str) else literal
