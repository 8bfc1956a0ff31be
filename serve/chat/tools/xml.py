"""XML-style calls (Qwen3-Coder, Qwen3.5, Nemotron 3, Step 3.5; Seed-OSS with its own outer tag):

    <tool_call>
    <function=NAME>
    <parameter=KEY>
    VALUE
    </parameter>
    </function>
    </tool_call>

and the same shape with names in attributes: MiniMax-M2's `<minimax:tool_call>` of `<invoke name="NAME">` with
`<parameter name="KEY">VALUE</parameter>`, DeepSeek V3.2/V4's `<!DSML!function_calls>` / `<!DSML!tool_calls>`
of `<!DSML!invoke name="NAME">` with `<!DSML!parameter name="KEY" string="true|false">VALUE</!DSML!parameter>`
(the `string` attribute says whether the value is text or JSON; `!` here stands for U+FF5C, the fullwidth bar);
Kimi K3's `<|open|>tools<|sep|>` of `<|open|>call tool="NAME" index="N"<|sep|>` with `<|open|>argument key="KEY"
type="string|number|boolean|object|array|null"<|sep|>VALUE<|close|>argument<|sep|>` (its response tags around the
answer are dropped; its thinking block is the channel parser's: channels.THINK_TAGS).

A value is raw text, one newline on each side being layout; the templates write strings as they are and other
values as JSON (or Python's `str`: `True`). The arguments go out as a JSON object, each value typed by the
tool's schema (typed.py): a string parameter streams as it comes, any other value once it ends. A value ends
only at `</parameter>` (so it may hold any other markup: a coder model's values are often code), which the tool
grammar therefore keeps out of string values.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass, field
from typing import Any

from serve.chat.tools.answer import Answer
from serve.chat.tools.events import CallArgs, CallStart, IdMaker, ToolEvent, Tools, merge, openai_id
from serve.chat.tools.scan import split_at_markers
from serve.chat.tools.typed import is_text, typed

FUNCTION, END_FUNCTION = "<function=", "</function>"
PARAMETER, END_PARAMETER = "<parameter=", "</parameter>"


@dataclass(frozen=True)
class TextAttr:
    """A parameter's attribute that says whether its value is text or JSON: DSML's `string="true|false"`, Kimi
    K3's `type="string|number|..."`."""

    name: str
    text: str  # the value that means text
    other: str | None = None  # the value for any other kind (None: the kind's own name)

    def value(self, kind: str) -> str:
        return self.text if kind == "string" else self.other or kind


@dataclass(frozen=True)
class XmlStyle:
    open: str = "<tool_call>"
    close: str = "</tool_call>"
    newlines: bool = True  # the template writes a newline on each side of a value (Seed-OSS writes none)
    function: str = FUNCTION
    end_function: str = END_FUNCTION
    parameter: str = PARAMETER
    end_parameter: str = END_PARAMETER
    quoted: bool = False  # names in a quoted attribute: `<invoke name="NAME">` (the tag ends at `">`)
    text_attr: TextAttr | None = None
    tag_end: str = ">"  # what ends an opening tag (Kimi K3: <|sep|>)
    layout: str = "\n"  # what the template writes after the block's tag, a function's tags and each parameter
    index_attr: bool = False  # a call's tag carries index="N" after its name (Kimi K3)
    shared_block: bool = False  # one block holds all of a turn's calls (else one block a call)
    skip: tuple[str, ...] = ()  # markup around the answer that is no answer (Kimi K3's response tags)

    def function_tag(self, name: str, index: int = 1) -> str:
        attrs = f'" index="{index}"' if self.index_attr else '"' if self.quoted else ""
        return self.function + name + attrs + self.tag_end

    def parameter_tag(self, key: str, kind: str) -> str:
        """A parameter's opening tag; `kind` is its value's JSON type name (string, number, boolean, ...)."""
        return self.parameter + key + self.parameter_end(kind)

    def parameter_end(self, kind: str) -> str:
        """What follows a parameter's key up to its value."""
        if self.text_attr:
            return f'" {self.text_attr.name}="{self.text_attr.value(kind)}"{self.tag_end}'
        return ('"' if self.quoted else "") + self.tag_end


def _dsml(block: str) -> XmlStyle:
    dsml = "\uff5cDSML\uff5c"  # between fullwidth bars, as DeepSeek's tokenizer spells it
    return XmlStyle(
        f"<{dsml}{block}>", f"</{dsml}{block}>", False, f'<{dsml}invoke name="', f"</{dsml}invoke>",
        f'<{dsml}parameter name="', f"</{dsml}parameter>", quoted=True, text_attr=TextAttr("string", "true", "false"),
        shared_block=True,
    )  # fmt: skip


def _kimi(tag: str) -> str:
    return f"<|open|>{tag}<|sep|>"


def _kimi_end(tag: str) -> str:
    return f"<|close|>{tag}<|sep|>"


QWEN = XmlStyle()
SEED = XmlStyle("<seed:tool_call>", "</seed:tool_call>", newlines=False)
MINIMAX = XmlStyle(
    "<minimax:tool_call>", "</minimax:tool_call>", False, '<invoke name="', "</invoke>", '<parameter name="',
    END_PARAMETER, quoted=True, shared_block=True,
)  # fmt: skip
DEEPSEEK_V32 = _dsml("function_calls")
DEEPSEEK_V4 = _dsml("tool_calls")
KIMI_K3 = XmlStyle(
    _kimi("tools"), _kimi_end("tools"), False, '<|open|>call tool="', _kimi_end("call"), '<|open|>argument key="',
    _kimi_end("argument"), quoted=True, text_attr=TextAttr("type", "string"), tag_end="<|sep|>", layout="",
    index_attr=True, shared_block=True, skip=(_kimi("response"), _kimi_end("response"), _kimi_end("message")),
)  # fmt: skip


class State(enum.Enum):
    TEXT = "text"  # answer text
    BLOCK = "block"  # inside <tool_call>, between functions
    NAME = "name"  # after <function=, up to >
    FUNCTION = "function"  # inside <function=NAME>, between parameters
    KEY = "key"  # after <parameter=, up to >
    VALUE = "value"


def _markers(style: XmlStyle) -> dict[State, tuple[str, ...]]:
    return {
        State.TEXT: (style.open, *style.skip),
        State.BLOCK: (style.function, style.close),
        State.NAME: (style.tag_end,),
        State.FUNCTION: (style.parameter, style.end_function),
        State.KEY: (style.tag_end,),
        State.VALUE: (style.end_parameter,),
    }


def parameter_schemas(tools: Tools | None) -> dict[str, dict[str, Any]]:
    """Each tool's parameter schemas by name."""
    out: dict[str, dict[str, Any]] = {}
    for t in tools or ():
        fn = t.get("function", t)
        props = (fn.get("parameters") or {}).get("properties")
        out[fn["name"]] = props if isinstance(props, dict) else {}
    return out


@dataclass
class XmlParser:
    style: XmlStyle = QWEN
    tools: Tools | None = None
    new_id: IdMaker = openai_id
    state: State = field(init=False, default=State.TEXT)
    calls: int = field(init=False, default=0)
    _markers: dict[State, tuple[str, ...]] = field(init=False, repr=False)
    _schemas: dict[str, dict[str, Any]] = field(init=False, repr=False)
    _answer: Answer = field(init=False, default_factory=Answer)
    _pending: str = field(init=False, default="")  # a held tail that may start a marker
    _name: str = field(init=False, default="")
    _key: str = field(init=False, default="")
    _first: bool = field(init=False, default=True)  # no parameter yet in this call
    _schema: Any = field(init=False, default=None)  # the current parameter's
    _stream: bool = field(init=False, default=False)  # the current value is a string, sent as it comes
    _value: str = field(init=False, default="")  # the current value so far (when not streamed)
    _lead: bool = field(init=False, default=True)  # the value's first character not seen yet
    _newline: str = field(init=False, default="")  # a held last newline of the value (layout if it ends there)

    def __post_init__(self) -> None:
        self._markers = _markers(self.style)
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
            lambda: self._markers[self.state],
            lambda between: self._between(between, out),
            lambda marker: self._marker(marker, out),
        )
        return merge(out)

    def finish(self) -> list[ToolEvent]:
        out: list[ToolEvent] = []
        pending, self._pending = self._pending, ""
        if self.state is State.TEXT:
            if not self.calls:  # after a call, a held partial marker is the next call cut off: dropped
                self._answer.add(pending, out)
        else:
            self._between(pending, out)
        if self.state is State.NAME and self._name.strip():
            self._start(out)
        if self.state is State.VALUE:
            self._end_value(out)
        if self.state in (State.FUNCTION, State.KEY, State.VALUE):
            out.append(CallArgs(self.calls - 1, "}"))
        self.state = State.TEXT
        return merge(out)

    def _between(self, text: str, out: list[ToolEvent]) -> None:
        if not text:
            return
        if self.state is State.TEXT:
            self._answer.add(text, out)
        elif self.state is State.NAME:
            self._name += text
        elif self.state is State.KEY:
            self._key += text
        elif self.state is State.VALUE:
            self._value_text(text, out)
        # BLOCK, FUNCTION: layout between the tags

    def _marker(self, marker: str, out: list[ToolEvent]) -> None:
        state = self.state
        if state is State.TEXT:
            if marker in self.style.skip:
                return
            self._answer.drop_space()
            self.state = State.BLOCK
        elif state is State.BLOCK:
            if marker == self.style.function:
                self.state, self._name = State.NAME, ""
            else:
                self.state = State.TEXT
        elif state is State.NAME:
            self._start(out)
        elif state is State.FUNCTION:
            if marker == self.style.parameter:
                self.state, self._key = State.KEY, ""
            else:
                out.append(CallArgs(self.calls - 1, "}"))
                self.state = State.BLOCK
        elif state is State.KEY:
            self._open_value(out)
        else:  # VALUE
            self._end_value(out)
            self.state = State.FUNCTION

    def _start(self, out: list[ToolEvent]) -> None:
        index, self._name = self.calls, self._attr(self._name)
        self.calls += 1
        out.append(CallStart(index, self.new_id(index), self._name))
        out.append(CallArgs(index, "{"))
        self.state, self._first = State.FUNCTION, True

    def _attr(self, text: str) -> str:
        """A name or key: the tag's text up to `>`, or (quoted) up to the attribute's closing quote."""
        text = text.strip()
        return text.split('"', 1)[0] if self.style.quoted else text

    def _open_value(self, out: list[ToolEvent]) -> None:
        key = self._attr(self._key)
        self._schema = self._schemas.get(self._name, {}).get(key)
        attr = self.style.text_attr
        said = re.search(rf'\b{attr.name}\s*=\s*"([^"]*)"', self._key) if attr else None
        self._stream = said.group(1) == attr.text if attr and said else is_text(self._schema)
        if said and not self._stream and is_text(self._schema):
            self._schema = None  # the model says JSON: read it as such
        self._value, self._lead, self._newline = "", True, ""
        sep = "" if self._first else ", "
        self._first = False
        out.append(CallArgs(self.calls - 1, f"{sep}{json.dumps(key, ensure_ascii=False)}: " + ('"' * self._stream)))
        self.state = State.VALUE

    def _value_text(self, text: str, out: list[ToolEvent]) -> None:
        if self._lead and self.style.newlines:
            text = text.removeprefix("\n")
        self._lead = False
        text = self._newline + text
        self._newline = "\n" if self.style.newlines and text.endswith("\n") else ""
        text = text[: len(text) - len(self._newline)]
        if not text:
            return
        if self._stream:
            out.append(CallArgs(self.calls - 1, json.dumps(text, ensure_ascii=False)[1:-1]))
        else:
            self._value += text

    def _end_value(self, out: list[ToolEvent]) -> None:
        """The value is complete; its held last newline was layout."""
        self._newline = ""
        if self._stream:
            out.append(CallArgs(self.calls - 1, '"'))
        else:
            out.append(CallArgs(self.calls - 1, json.dumps(typed(self._value, self._schema), ensure_ascii=False)))
