"""The incremental parser shared by the text call formats (Hermes, Llama 3.x, Mistral, Granite, Kimi, MiniMax-M1,
generic).

A format is a `Spec`: a table from (state, marker) to the transition it causes, like serve/chat/channels.py's
harmony table, plus which keys name a call and hold its arguments. `feed(text) -> events` and
`finish() -> events` take the answer in any split and give the same calls and the same answer text for
every split: outside JSON only the longest tail that could still become a marker is held back, and inside
JSON the scanners of jsonscan.py keep their place. Markers never reach the answer text.

States: START (the answer's first characters, where a format may open a call with a bare JSON object),
TEXT (answer text), CALLS (after an opening marker: a list, an object or a bare name follows), LIST (inside
`[...]` of call objects), OBJECT (one call object), NAME / CALL_ID / ARGS (Mistral's
`NAME[CALL_ID]ID[ARGS]{...}`, Solar's `ID<|tool_call:name|>NAME<|tool_call:args|>{...}`), AFTER (a call just
ended: separators and closing markers are taken here), LINES (MiniMax-M1's section of call objects one a line).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from serve.chat.tools.answer import Answer
from serve.chat.tools.events import CallArgs, CallStart, IdMaker, ToolEvent, merge, openai_id
from serve.chat.tools.jsonscan import WHITESPACE, CallScanner, Found, Part, ValueScanner
from serve.engine.stops import first_marker, partial_tail


class State(enum.Enum):
    START = "start"
    TEXT = "text"
    CALLS = "calls"
    LIST = "list"
    OBJECT = "object"
    NAME = "name"
    CALL_ID = "call_id"
    ARGS = "args"
    AFTER = "after"
    LINES = "lines"  # inside a section of call objects one after another (MiniMax-M1), up to its closing marker


class Action(enum.Enum):
    OPEN = "open"  # an opening marker: what follows is a list, an object or (names=True) a bare name
    OBJECT = "object"  # exactly one call object follows
    ARGS = "args"  # NAME is complete; its arguments value follows
    CALL_ID = "call_id"  # NAME is complete; an id, then [ARGS], follows
    CLOSE = "close"  # a closing marker: back to answer text
    ID = "id"  # the call's own id follows, before its name (dropped: every call gets one of ours)
    NAME = "name"  # a bare name follows (after an id)
    LINES = "lines"  # call objects follow, one after another, until the section's closing marker
    SKIP = "skip"  # a marker that only frames calls (Kimi's section and call ends): dropped, the state stays


MARKER_STATES = (State.START, State.TEXT, State.AFTER, State.NAME, State.CALL_ID, State.LINES)
MAX_NAME_CHARS = 128  # a "name" longer than this is no tool name: the text is taken as the answer


@dataclass(frozen=True)
class Spec:
    table: Mapping[tuple[State, str], Action]
    name_keys: tuple[str, ...] = ("name",)
    args_keys: tuple[str, ...] = ("arguments", "parameters")
    bare_object: bool = False  # the answer itself may be the call object (Llama 3.x)
    bare_names: bool = False  # an opening marker may be followed by NAME[ARGS]{...} (Mistral)
    keyed: bool = False  # a call object is {"NAME": {...}} (Apertus)
    new_id: IdMaker = openai_id
    name_of: Callable[[str], str] = str.strip  # a bare name's text to the tool's name (Kimi: its call id)
    # the table's markers by state, derived once
    _markers: Mapping[State, tuple[str, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_state = {state: tuple(m for (s, m) in self.table if s is state) for state in State}
        object.__setattr__(self, "_markers", by_state)

    def markers(self, state: State) -> tuple[str, ...]:
        return self._markers[state]


@dataclass
class MarkupParser:
    spec: Spec
    new_id: IdMaker | None = None  # overrides spec.new_id (tests make ids deterministic)
    state: State = field(init=False)
    calls: int = field(init=False, default=0)
    _pending: str = field(init=False, default="")  # a held tail that may start a marker
    _answer: Answer = field(init=False, default_factory=Answer)  # answer text, its whitespace held until text follows
    _object: CallScanner | None = field(init=False, default=None)
    _object_then: State = field(init=False, default=State.AFTER)
    _buffered: list[str] = field(init=False, default_factory=list)  # arguments seen before the name
    _started: bool = field(init=False, default=False)  # the current call's CallStart went out
    _name: str = field(init=False, default="")
    _args: ValueScanner | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.state = State.START if self.spec.bare_object else State.TEXT

    @property
    def in_json(self) -> bool:
        """Inside a call's JSON, where any marker is only text of the arguments."""
        return self.state in (State.OBJECT, State.LIST, State.ARGS)

    @property
    def in_call(self) -> bool:
        """Inside call markup (for counting its tokens apart from the answer's)."""
        return self.state not in (State.START, State.TEXT)

    def feed(self, text: str) -> list[ToolEvent]:
        out: list[ToolEvent] = []
        text = self._pending + text
        self._pending = ""
        while text:
            scan = self._scan_markers if self.state in MARKER_STATES else self._scan_json
            text = scan(text, out)
        return merge(out)

    def finish(self) -> list[ToolEvent]:
        out: list[ToolEvent] = []
        pending, self._pending = self._pending, ""
        after_call = self.calls and self.state in (State.TEXT, State.AFTER)
        if pending and self.state in MARKER_STATES and not after_call and self.state is not State.LINES:
            self._plain(pending, out)  # after a call, a held partial marker is the next call cut off: dropped
        if self.state is State.OBJECT and self._object is not None:
            self._take(self._object.finish(), out)
            if not self._started:
                self._give_up_object(out)
        elif self.state is State.ARGS and self._args is not None:
            self._args.finish()
        elif self.state is State.NAME and self._name.strip():
            self._start(self.spec.name_of(self._name), out)
            out.append(CallArgs(self.calls - 1, "{}"))
        self.state = State.TEXT
        return merge(out)

    # -- outside JSON: markers ----------------------------------------------------------------------------

    def _scan_markers(self, text: str, out: list[ToolEvent]) -> str:
        markers = self.spec.markers(self.state)
        found = first_marker(text, markers)
        if found is None:
            keep = partial_tail(text, markers)
            rest = self._plain(text[: len(text) - keep], out)
            if rest is not None:
                return rest + text[len(text) - keep :]
            self._pending = text[len(text) - keep :]
            return ""
        pos, marker = found
        rest = self._plain(text[:pos], out)
        if rest is not None:  # the state changed inside the plain text: scan again from there
            return rest + text[pos:]
        action = self.spec.table.get((self.state, marker))
        if action is None:  # the plain text moved to a state where this is no marker
            return text[pos:]
        self._act(action, out)
        return text[pos + len(marker) :]

    def _plain(self, text: str, out: list[ToolEvent]) -> str | None:
        """Text between markers. Returns the unconsumed rest when the state changed part-way."""
        if not text:
            return None
        if self.state is State.START:
            stripped = text.lstrip()
            if not stripped:
                return None
            self.state = State.TEXT
            if stripped[0] == "{":  # a bare object: a call if it names a tool, else answer text (see _in_object)
                self._open_object(State.AFTER)
                return stripped
            self._content(stripped, out)
            return None
        if self.state is State.TEXT:
            self._content(text, out)
        elif self.state is State.AFTER:
            stripped = text.lstrip()
            if stripped:  # text after a call: the answer goes on
                self.state = State.TEXT
                self._content(stripped, out)
        elif self.state is State.LINES:
            stripped = text.lstrip()
            if stripped.startswith("{"):  # the next call object
                self._open_object(State.LINES)
                return stripped
            if stripped:  # no call object after all: the section's text is answer text
                self.state = State.TEXT
                self._content(stripped, out)
        elif self.state is State.NAME:
            self._name += text
            if len(self._name) > MAX_NAME_CHARS or "\n" in self._name.strip():
                self.state, name = State.TEXT, self._name
                self._content(name, out)
        # State.CALL_ID: the model's own id is dropped; every call gets one of ours
        return None

    def _content(self, text: str, out: list[ToolEvent]) -> None:
        self._answer.add(text, out)

    def _act(self, action: Action, out: list[ToolEvent]) -> None:
        if action is Action.OPEN:
            self.state = State.CALLS
        elif action is Action.OBJECT:
            self._open_object(State.AFTER)
        elif action is Action.CALL_ID:
            self._start_named(out)
            self.state = State.CALL_ID
        elif action is Action.ARGS:
            if self.state is State.NAME:
                self._start_named(out)
            self.state, self._args = State.ARGS, ValueScanner()
        elif action is Action.CLOSE:
            self.state = State.TEXT
        elif action is Action.ID:
            self.state = State.CALL_ID
        elif action is Action.NAME:
            self.state, self._name = State.NAME, ""
        elif action is Action.LINES:
            self.state = State.LINES
        # Action.SKIP: nothing changes

    def _start_named(self, out: list[ToolEvent]) -> None:
        self._start(self.spec.name_of(self._name), out)
        self._name = ""

    # -- inside JSON ---------------------------------------------------------------------------------------

    def _scan_json(self, text: str, out: list[ToolEvent]) -> str:
        if self.state is State.OBJECT:
            return self._in_object(text, out)
        if self.state is State.ARGS:
            return self._in_args(text, out)
        i = 0
        while i < len(text) and text[i] in WHITESPACE:
            i += 1
        if i == len(text):
            return ""
        c = text[i]
        if self.state is State.CALLS:
            if c == "[":
                self.state = State.LIST
                return text[i + 1 :]
            if c == "{":
                self._open_object(State.AFTER)
                return text[i:]
            if self.spec.bare_names:
                self.state, self._name = State.NAME, ""
                return text[i:]
        elif self.state is State.LIST:
            if c == ",":
                return text[i + 1 :]
            if c == "]":
                self.state = State.AFTER
                return text[i + 1 :]
            if c == "{":
                self._open_object(State.LIST)
                return text[i:]
        self.state = State.TEXT  # no call after all: the rest is answer text
        return text[i:]

    def _open_object(self, then: State) -> None:
        self.state, self._object_then = State.OBJECT, then
        self._object = CallScanner(self.spec.name_keys, self.spec.args_keys, self.spec.keyed)
        self._buffered, self._started = [], False

    def _in_object(self, text: str, out: list[ToolEvent]) -> str:
        assert self._object is not None
        used, found = self._object.feed(text)
        self._take(found, out)
        rest = text[used:]
        if self._object.finished:
            if not self._started:  # it closed (or broke) before naming a tool: it was answer text
                self._give_up_object(out)
                return rest
            self.state = self._object_then if self._object.part is Part.DONE else State.AFTER
            self._object = None
        return rest

    def _take(self, found: list[Found], out: list[ToolEvent]) -> None:
        for f in found:
            if f.what == "name":
                self._start(f.text, out)
                for piece in self._buffered:
                    out.append(CallArgs(self.calls - 1, piece))
                self._buffered = []
            elif f.what == "args":
                if self._started:
                    out.append(CallArgs(self.calls - 1, f.text))
                else:
                    self._buffered.append(f.text)

    def _give_up_object(self, out: list[ToolEvent]) -> None:
        assert self._object is not None
        raw, self._object = self._object.raw, None
        self.state = State.TEXT
        self._content(raw, out)

    def _in_args(self, text: str, out: list[ToolEvent]) -> str:
        assert self._args is not None
        used, piece = self._args.feed(text)
        if piece:
            out.append(CallArgs(self.calls - 1, piece))
        if self._args.done:
            self.state, self._args = State.AFTER, None
        return text[used:]

    def _start(self, name: str, out: list[ToolEvent]) -> None:
        index = self.calls
        self.calls += 1
        self._started = True
        self._answer.drop_space()  # whitespace before a call is layout
        out.append(CallStart(index, (self.new_id or self.spec.new_id)(index), name))


ParserFactory = Callable[[], MarkupParser]
