"""Calls written as tags around a name and key/value pairs, each style a table of markers:

    glm      <tool_call>NAME<arg_key>KEY</arg_key><arg_value>VALUE</arg_value></tool_call>   (Spark 2.5, Laguna;
             newlines between the tags where the template writes them)
    minicpm  <function name="NAME"><param name="KEY">VALUE</param></function>            (MiniCPM 5; a value may
             sit in <![CDATA[...]]>)
    hy3      <tool_calls:opensource><tool_call:opensource>NAME<tool_sep:opensource><arg_key:opensource>KEY
             </arg_key:opensource><arg_value:opensource>VALUE</arg_value:opensource></tool_call:opensource>...
             </tool_calls:opensource>                                              (Tencent Hy3, one block of calls)
    atem     <atem:function_calls><atem:invoke name="NAME"><atem:parameter name="KEY">VALUE</atem:parameter>
             </atem:invoke></atem:function_calls>                                 (Muse Glimmer; each call in a
             message of its own, `<|start|>assistant to=NAME<|message|>...<|eom|>`, whose headers and ends are
             dropped; the reasoning message, `to=self`, is the channel parser's: channels.THINK_TAGS)

A value is raw text up to its closing tag (so it may hold any other markup), typed by the tool's schema as in
xml.py: a string parameter streams as it comes, any other value goes out once it ends (typed.py).

States: TEXT (answer text), HEADER (a message header, dropped), BLOCK (between the calls of a block), NAME, FUNCTION (between a call's pairs), KEY, BEFORE_VALUE (between a key's
closing tag and its value's opening one), VALUE, CDATA. A table row is (state, marker) -> (next state, steps);
the steps say what the marker completes.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from serve.chat.tools.answer import Answer
from serve.chat.tools.events import CallArgs, CallStart, IdMaker, ToolEvent, Tools, merge, openai_id
from serve.chat.tools.pythonic import literal
from serve.chat.tools.scan import split_at_markers
from serve.chat.tools.typed import is_text, typed
from serve.chat.tools.xml import parameter_schemas


class State(enum.Enum):
    TEXT = "text"
    HEADER = "header"
    BLOCK = "block"
    NAME = "name"
    FUNCTION = "function"
    KEY = "key"
    BEFORE_VALUE = "before_value"
    VALUE = "value"
    CDATA = "cdata"


class Step(enum.Enum):
    START = "start"  # the name is complete: the call begins
    KEY = "key"  # the key is complete: its value begins
    VALUE = "value"  # the value is complete
    END = "end"  # the call is complete


Row = tuple[State, tuple[Step, ...]]


@dataclass(frozen=True)
class TagStyle:
    """A style's parser table, and the text its templates write (for the grammar): `head` and `param` are
    formats with `{name}` / `{key}`; a newline in them is layout the model may leave out."""

    table: Mapping[tuple[State, str], Row]
    head: str  # a call's text up to its first pair
    param: str  # a pair's text up to its value
    value_end: str
    call_end: str
    python_values: bool = False  # the template writes non-string values as Python's str ({'a': True})
    block: tuple[str, str] | None = None  # the text around a block of calls (None: each call stands alone)
    block_sep: str = ""  # GBNF for what may stand between blocks of calls (none: one block)
    header_first: bool = False  # the output opens with the rest of a message header (up to its end marker)
    _markers: Mapping[State, tuple[str, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_state = {state: tuple(m for (s, m) in self.table if s is state) for state in State}
        object.__setattr__(self, "_markers", by_state)

    @property
    def opener(self) -> str:
        """The text that opens a call (the grammar's trigger): the first marker out of answer text."""
        return next(m for (s, m), (after, _) in self.table.items() if s is State.TEXT and after is not State.TEXT)

    def markers(self, state: State) -> tuple[str, ...]:
        return self._markers[state]


GLM_OPEN, GLM_CLOSE = "<tool_call>", "</tool_call>"
GLM = TagStyle(
    table={
        (State.TEXT, GLM_OPEN): (State.NAME, ()),
        (State.NAME, "\n"): (State.FUNCTION, (Step.START,)),
        (State.NAME, "<arg_key>"): (State.KEY, (Step.START,)),
        (State.NAME, GLM_CLOSE): (State.TEXT, (Step.START, Step.END)),
        (State.FUNCTION, "<arg_key>"): (State.KEY, ()),
        (State.FUNCTION, GLM_CLOSE): (State.TEXT, (Step.END,)),
        (State.KEY, "</arg_key>"): (State.BEFORE_VALUE, (Step.KEY,)),
        (State.BEFORE_VALUE, "<arg_value>"): (State.VALUE, ()),
        (State.VALUE, "</arg_value>"): (State.FUNCTION, (Step.VALUE,)),
    },
    head=GLM_OPEN + "{name}\n",
    param="<arg_key>{key}</arg_key>\n<arg_value>",
    value_end="</arg_value>\n",
    call_end=GLM_CLOSE,
)

MINICPM = TagStyle(
    table={
        (State.TEXT, '<function name="'): (State.NAME, ()),
        (State.NAME, '">'): (State.FUNCTION, (Step.START,)),
        (State.FUNCTION, '<param name="'): (State.KEY, ()),
        (State.FUNCTION, "</function>"): (State.TEXT, (Step.END,)),
        (State.KEY, '">'): (State.VALUE, (Step.KEY,)),
        (State.VALUE, "<![CDATA["): (State.CDATA, ()),
        (State.CDATA, "]]>"): (State.VALUE, ()),
        (State.VALUE, "</param>"): (State.FUNCTION, (Step.VALUE,)),
    },
    head='<function name="{name}">',
    param='<param name="{key}">',
    value_end="</param>",
    call_end="</function>",
    python_values=True,
)

HY3_TAG = ":opensource"  # Hy3's tags end in the tokenizer's suffix


def _hy3(tag: str) -> str:
    return tag.replace(">", HY3_TAG + ">")


HY3 = TagStyle(
    table={
        (State.TEXT, _hy3("<tool_calls>")): (State.BLOCK, ()),
        (State.BLOCK, _hy3("<tool_call>")): (State.NAME, ()),
        (State.BLOCK, _hy3("</tool_calls>")): (State.TEXT, ()),
        (State.NAME, _hy3("<tool_sep>")): (State.FUNCTION, (Step.START,)),
        (State.FUNCTION, _hy3("<arg_key>")): (State.KEY, ()),
        (State.FUNCTION, _hy3("</tool_call>")): (State.BLOCK, (Step.END,)),
        (State.KEY, _hy3("</arg_key>")): (State.BEFORE_VALUE, (Step.KEY,)),
        (State.BEFORE_VALUE, _hy3("<arg_value>")): (State.VALUE, ()),
        (State.VALUE, _hy3("</arg_value>")): (State.FUNCTION, (Step.VALUE,)),
    },
    head=_hy3("<tool_call>") + "{name}" + _hy3("<tool_sep>") + "\n",
    param=_hy3("<arg_key>") + "{key}" + _hy3("</arg_key>") + "\n" + _hy3("<arg_value>"),
    value_end=_hy3("</arg_value>") + "\n",
    call_end=_hy3("</tool_call>"),
    block=(_hy3("<tool_calls>") + "\n", _hy3("</tool_calls>")),
)

HEADER_REST = "to="  # how a header's rest opens an output (the prompt wrote `<|start|>assistant`)
ATEM_HEADER = ("<|start|>", "<|message|>")  # a message header: `<|start|>assistant to=RECIPIENT<|message|>`
ATEM = TagStyle(
    table={
        (State.TEXT, "<atem:function_calls>"): (State.BLOCK, ()),
        (State.TEXT, ATEM_HEADER[0]): (State.HEADER, ()),
        (State.TEXT, "<|eom|>"): (State.TEXT, ()),
        (State.TEXT, "<|eot|>"): (State.TEXT, ()),
        (State.HEADER, ATEM_HEADER[1]): (State.TEXT, ()),
        (State.BLOCK, '<atem:invoke name="'): (State.NAME, ()),
        (State.BLOCK, "</atem:function_calls>"): (State.TEXT, ()),
        (State.NAME, '">'): (State.FUNCTION, (Step.START,)),
        (State.FUNCTION, '<atem:parameter name="'): (State.KEY, ()),
        (State.FUNCTION, "</atem:invoke>"): (State.BLOCK, (Step.END,)),
        (State.KEY, '">'): (State.VALUE, (Step.KEY,)),
        (State.VALUE, "</atem:parameter>"): (State.FUNCTION, (Step.VALUE,)),
    },
    head='<atem:invoke name="{name}">\n',
    param='<atem:parameter name="{key}">',
    value_end="</atem:parameter>\n",
    call_end="</atem:invoke>",
    block=("<atem:function_calls>\n", "</atem:function_calls>"),
    block_sep='"<|eom|><|start|>assistant to=" [a-zA-Z0-9_.-]+ "<|message|>"',
    header_first=True,
)

IN_CALL = (State.FUNCTION, State.KEY, State.BEFORE_VALUE, State.VALUE, State.CDATA)


@dataclass
class TaggedParser:
    style: TagStyle
    tools: Tools | None = None
    new_id: IdMaker = openai_id
    state: State = field(init=False, default=State.TEXT)
    calls: int = field(init=False, default=0)
    _schemas: dict[str, dict[str, Any]] = field(init=False, repr=False)
    _answer: Answer = field(init=False, default_factory=Answer)
    _pending: str = field(init=False, default="")  # a held tail that may start a marker
    _name: str = field(init=False, default="")
    _key: str = field(init=False, default="")
    _first: bool = field(init=False, default=True)  # no pair yet in this call
    _schema: Any = field(init=False, default=None)  # the current value's
    _stream: bool = field(init=False, default=False)  # the current value is a string, sent as it comes
    _value: str = field(init=False, default="")  # the current value so far (when not streamed)

    _header: str = field(init=False, default="")  # the output's opening header so far
    _opening: str | None = field(init=False, default=None)  # header_first: the output's start, until it is known

    def __post_init__(self) -> None:
        self._schemas = parameter_schemas(self.tools)
        if self.style.header_first:
            self._opening = ""

    @property
    def in_json(self) -> bool:
        return self.state not in (State.TEXT, State.HEADER)

    @property
    def in_call(self) -> bool:
        return self.in_json

    def feed(self, text: str) -> list[ToolEvent]:
        out: list[ToolEvent] = []
        if self._opening is not None:
            text = self._open(text)
        self._pending = split_at_markers(
            self._pending + text,
            lambda: self.style.markers(self.state),
            lambda between: self._between(between, out),
            lambda marker: self._marker(marker, out),
        )
        return merge(out)

    def _open(self, text: str) -> str:
        """header_first: the output opens with a header's rest (` to=NAME`) or, where the channel parser took the
        header away (Muse Glimmer's answer after its reasoning), with answer text; held until it says which."""
        start = (self._opening or "") + text
        if HEADER_REST.startswith(start.lstrip()):
            self._opening = start
            return ""
        self._opening = None
        if start.lstrip().startswith(HEADER_REST):
            self.state, self._header = State.HEADER, ""
        return start

    def finish(self) -> list[ToolEvent]:
        out: list[ToolEvent] = []
        if self._opening is not None:  # the output ended before it said: its text is the answer's
            opening, self._opening = self._opening, None
            out += self.feed(opening)
        pending, self._pending = self._pending, ""
        if self.state is State.TEXT:
            if not self.calls:  # after a call, a held partial marker is the next call cut off: dropped
                self._answer.add(pending, out)
        elif self.state is State.HEADER and not self.calls:  # no header ended: it was answer text
            self._answer.add(self._header + pending, out)
        else:
            self._between(pending, out)
        if self.state is State.NAME and self._name.strip():
            self._step(Step.START, out)
        if self.state in (State.VALUE, State.CDATA):
            self._step(Step.VALUE, out)
        if self.state in IN_CALL:
            self._step(Step.END, out)
        self.state = State.TEXT
        return merge(out)

    def _between(self, text: str, out: list[ToolEvent]) -> None:
        if not text:
            return
        if self.state is State.TEXT:
            self._answer.add(text, out)
        elif self.state is State.HEADER:
            self._header += text
        elif self.state is State.NAME:
            self._name += text
        elif self.state is State.KEY:
            self._key += text
        elif self.state in (State.VALUE, State.CDATA):
            if self._stream:
                out.append(CallArgs(self.calls - 1, json.dumps(text, ensure_ascii=False)[1:-1]))
            else:
                self._value += text
        # FUNCTION, BEFORE_VALUE: layout between the tags

    def _marker(self, marker: str, out: list[ToolEvent]) -> None:
        if self.state is State.TEXT:
            self._answer.drop_space()
        after, steps = self.style.table[(self.state, marker)]
        for step in steps:
            self._step(step, out)
        if after is State.HEADER:
            self._header = ""
        elif after is State.NAME:
            self._name = ""
        elif after is State.KEY:
            self._key = ""
        self.state = after

    def _step(self, step: Step, out: list[ToolEvent]) -> None:
        if step is Step.START:
            index, self._name = self.calls, self._name.strip()
            self.calls += 1
            out.append(CallStart(index, self.new_id(index), self._name))
            out.append(CallArgs(index, "{"))
            self._first = True
        elif step is Step.KEY:
            key = self._key.strip()
            self._schema = self._schemas.get(self._name, {}).get(key)
            self._stream, self._value = is_text(self._schema), ""
            sep = "" if self._first else ", "
            self._first = False
            out.append(CallArgs(self.calls - 1, f"{sep}{json.dumps(key, ensure_ascii=False)}: " + '"' * self._stream))
        elif step is Step.VALUE:
            if self._stream:
                out.append(CallArgs(self.calls - 1, '"'))
            else:
                value = _typed(self._value, self._schema, self.style.python_values)
                out.append(CallArgs(self.calls - 1, json.dumps(value, ensure_ascii=False)))
        else:  # END
            out.append(CallArgs(self.calls - 1, "}"))


def _typed(text: str, schema: Any, python: bool) -> Any:
    """typed.py's reading, and where the template writes Python's `str`, a Python literal that fits the schema."""
    value = typed(text, schema)
    if python and isinstance(value, str) and value == text:
        read = literal(text)
        if not isinstance(read, str):
            return typed(json.dumps(read), schema)
    return value
