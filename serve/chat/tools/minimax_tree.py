"""MiniMax-M3 calls: every tag behind the `]<]minimax[>[` mark, arguments as elements, nested values as nested
elements (a list's entries `<item>`), and no value quoted:

    ]<]minimax[>[<tool_call>
    ]<]minimax[>[<invoke name="NAME">]<]minimax[>[<city>Paris]<]minimax[>[</city>]<]minimax[>[</invoke>
    ]<]minimax[>[</tool_call>

The arguments go out as a JSON object as they come: an element whose schema is a string streams as text; an
element that holds elements is an object (a list, when they are `<item>`s or its schema is an array); any other
value goes out once it closes, typed by its schema (typed.py).
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any

from serve.chat.tools.answer import Answer
from serve.chat.tools.events import CallArgs, CallStart, IdMaker, ToolEvent, Tools, merge, openai_id
from serve.chat.tools.scan import split_at_markers
from serve.chat.tools.typed import is_text, schema_types, typed
from serve.chat.tools.xml import parameter_schemas

MARK = "]<]minimax[>["
OPEN, CLOSE = MARK + "<tool_call>", MARK + "</tool_call>"
INVOKE, END_INVOKE, ITEM = 'invoke name="', "/invoke", "item"


class State(enum.Enum):
    TEXT = "text"  # answer text
    TAG = "tag"  # after the mark, a tag up to >
    CONTENT = "content"  # inside the block, between tags


MARKERS = {State.TEXT: (OPEN,), State.TAG: (">",), State.CONTENT: (MARK,)}


@dataclass
class Element:
    key: str
    schema: Any
    kind: str = ""  # "{" or "[" once it holds elements; "" while it may be a plain value
    first: bool = True  # nothing in it yet
    stream: bool = False  # a string, sent as it comes
    text: str = ""  # a plain value so far


def child_schema(schema: Any, key: str, item: bool) -> Any:
    if not isinstance(schema, dict):
        return None
    if item:
        return schema.get("items")
    props = schema.get("properties")
    return props.get(key) if isinstance(props, dict) else None


@dataclass
class MinimaxTreeParser:
    tools: Tools | None = None
    new_id: IdMaker = openai_id
    state: State = field(init=False, default=State.TEXT)
    calls: int = field(init=False, default=0)
    _schemas: dict[str, dict[str, Any]] = field(init=False, repr=False)
    _answer: Answer = field(init=False, default_factory=Answer)
    _pending: str = field(init=False, default="")
    _tag: str = field(init=False, default="")
    _stack: list[Element] = field(init=False, default_factory=list)  # the call's object, then open elements

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
        self._pending = split_at_markers(
            self._pending + text,
            lambda: MARKERS[self.state],
            lambda between: self._between(between, out),
            lambda _marker: self._marker(out),
        )
        return merge(out)

    def finish(self) -> list[ToolEvent]:
        out: list[ToolEvent] = []
        pending, self._pending = self._pending, ""
        if self.state is State.TEXT and not self.calls:  # after a call, a held partial marker is cut off: dropped
            self._answer.add(pending, out)
        elif self.state is State.CONTENT:
            self._between(pending, out)
        while self._stack:
            self._close(out)
        self.state = State.TEXT
        return merge(out)

    def _between(self, text: str, out: list[ToolEvent]) -> None:
        if not text:
            return
        if self.state is State.TEXT:
            self._answer.add(text, out)
        elif self.state is State.TAG:
            self._tag += text
        elif len(self._stack) > 1:  # a value's text; between the call's elements it is layout
            top = self._stack[-1]
            if top.stream:
                self._emit(json.dumps(text, ensure_ascii=False)[1:-1], out)
            elif not top.kind:
                top.text += text

    def _marker(self, out: list[ToolEvent]) -> None:
        if self.state is State.TEXT:  # the block opens
            self._answer.drop_space()
            self.state = State.CONTENT
        elif self.state is State.CONTENT:  # a tag follows the mark
            self.state, self._tag = State.TAG, ""
        else:  # the tag is complete
            self.state = State.CONTENT
            self._on_tag(self._tag.strip().removeprefix("<"), out)

    def _on_tag(self, tag: str, out: list[ToolEvent]) -> None:
        top = self._stack[-1] if self._stack else None
        if top is not None and top.stream and tag != "/" + top.key:  # markup inside a string is its text
            self._emit(json.dumps(f"<{tag}>", ensure_ascii=False)[1:-1], out)
        elif tag in ("/tool_call", END_INVOKE):
            while self._stack:
                self._close(out)
            if tag == "/tool_call":
                self.state = State.TEXT
        elif tag.startswith(INVOKE):
            while self._stack:
                self._close(out)
            self._start(tag.removeprefix(INVOKE).split('"', 1)[0].strip(), out)
        elif tag.startswith("/"):
            if len(self._stack) > 1:  # the call's own object closes only at </invoke>
                self._close(out)
        elif top is not None:
            self._open(top, tag, out)
        # a tag outside any call (<tool_call> again): layout

    def _start(self, name: str, out: list[ToolEvent]) -> None:
        index = self.calls
        self.calls += 1
        out.append(CallStart(index, self.new_id(index), name))
        self._emit("{", out)
        props = self._schemas.get(name, {})
        self._stack = [Element(name, {"type": "object", "properties": props}, kind="{")]

    def _open(self, parent: Element, tag: str, out: list[ToolEvent]) -> None:
        if not parent.kind:  # its first element: the parent holds elements, not a value
            array = tag == ITEM or schema_types(parent.schema) == {"array"}
            parent.kind, parent.text = ("[" if array else "{"), ""
            self._emit(parent.kind, out)
        sep = "" if parent.first else ", "
        parent.first = False
        item = parent.kind == "["
        self._emit(sep if item else f"{sep}{json.dumps(tag, ensure_ascii=False)}: ", out)
        child = Element(tag, child_schema(parent.schema, tag, item))
        child.stream = is_text(child.schema)
        if child.stream:
            self._emit('"', out)
        self._stack.append(child)

    def _close(self, out: list[ToolEvent]) -> None:
        e = self._stack.pop()
        if e.stream:
            self._emit('"', out)
        elif e.kind:
            self._emit("}" if e.kind == "{" else "]", out)
        else:
            types = schema_types(e.schema)
            empty = "{}" if types == {"object"} else "[]" if types == {"array"} else None
            value = empty if empty and not e.text.strip() else json.dumps(typed(e.text, e.schema), ensure_ascii=False)
            self._emit(value, out)

    def _emit(self, text: str, out: list[ToolEvent]) -> None:
        out.append(CallArgs(self.calls - 1, text))
