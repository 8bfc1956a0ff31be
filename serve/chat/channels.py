"""Incremental separation of thinking from the answer: harmony channels and thinking blocks (`<think>` and each
family's own markers: THINK_TAGS).

A pure state machine: `feed(piece) -> list[Event]`, `finish() -> list[Event]`. It is fed text pieces in any
split (whole tokens, bytes of a tag, several tags at once) and yields the same channel texts for every split,
because it holds back only the longest tail that could still become a marker. Markers never reach the output.

Harmony is parsed tolerantly: a header that never reaches `<|message|>`, a missing `<|start|>`, or a bare
`<|channel|>` inside a body are read as the model meant them, and text that fits no header becomes `final`
instead of an error (llama.cpp's strict parser fails such turns).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

from serve.engine.stops import first_marker, partial_tail

ANALYSIS, COMMENTARY, FINAL = "analysis", "commentary", "final"
CHANNELS = (ANALYSIS, COMMENTARY, FINAL)


@dataclass(frozen=True)
class Event:
    channel: str  # analysis, commentary or final
    text: str
    recipient: str | None = None  # harmony: the header's `to=` (functions.NAME for a tool call)
    message: int = field(default=0, compare=False)  # harmony: the message's number in the turn


class Format(enum.Enum):
    THINK = "think"  # <think>...</think> then the answer
    HARMONY = "harmony"  # gpt-oss channels
    # a thinking block in the family's own markers, then the answer (THINK_TAGS)
    GEMMA4 = "gemma4"
    MINIMAX = "minimax"
    KIMI_K3 = "kimi-k3"
    HY3 = "hy3"
    SEED = "seed"
    COHERE = "cohere"
    APRIEL = "apriel"
    MISTRAL = "mistral"
    SOLAR = "solar"
    MUSE = "muse"


@dataclass(frozen=True)
class ThinkTags:
    """A thinking block's markers, as the family's template writes earlier reasoning and opens its thinking."""

    open: str
    close: str
    answer: tuple[str, ...] = ()  # markup around the answer that is no answer (dropped, never shown)
    # what a grammar lets come between the thinking and the answer or calls, one of these or nothing (the markup
    # the template writes there)
    lead: tuple[str, ...] = ()
    # other texts that open the thinking (a later reasoning message's whole header)
    reopen: tuple[str, ...] = ()
    # what names the family in its template (detection: serve/chat/prompts.py); none: its open or close marker
    signs: tuple[str, ...] = ()
    # an end-of-generation token that ends the thinking's message, not the turn (the engine goes on past it)
    message_end: str = ""
    # the control tokens of the family's turn its parsers read (the engine drops the text of any other)
    keep: tuple[str, ...] = ()

    @property
    def markers(self) -> tuple[str, ...]:
        return (self.open, self.close, *self.answer, *self.reopen)


# The families whose thinking is a block before the answer; the order is detection's (serve/chat/prompts.py).
THINK_TAGS = {
    Format.GEMMA4: ThinkTags("<|channel>thought", "<channel|>"),
    Format.MINIMAX: ThinkTags("<mm:think>", "</mm:think>"),
    Format.KIMI_K3: ThinkTags(
        "<|open|>think<|sep|>",
        "<|close|>think<|sep|>",
        ("<|open|>response<|sep|>", "<|close|>response<|sep|>", "<|close|>message<|sep|>"),
        ("<|open|>response<|sep|>", "<|open|>response<|sep|><|close|>response<|sep|>"),
    ),
    Format.HY3: ThinkTags("<think:opensource>", "</think:opensource>"),
    Format.SEED: ThinkTags("<seed:think>", "</seed:think>"),
    # Command R7B's plan and Cohere2's thinking; R7B answers in START/END_RESPONSE, Cohere2 in START/END_TEXT
    Format.COHERE: ThinkTags(
        "<|START_THINKING|>",
        "<|END_THINKING|>",
        ("<|START_RESPONSE|>", "<|END_RESPONSE|>", "<|START_TEXT|>", "<|END_TEXT|>"),
        ("<|START_RESPONSE|>", "<|START_TEXT|>"),
    ),
    # Apriel's reasoning steps: 1.6's prompt opens them, 1.5's model writes the opening itself
    Format.APRIEL: ThinkTags("Here are my reasoning steps:", "[BEGIN FINAL RESPONSE]", ("[END FINAL RESPONSE]",)),
    Format.MISTRAL: ThinkTags("[THINK]", "[/THINK]"),  # Ministral 3 / Magistral reasoning
    # Solar Open: `<|think|>…<|end|>` ends a message of its own, then `<|begin|>assistant` opens the answer's
    # (`<|content|>…<|flush|>`) or the calls' (`<|tool_calls|>…<|calls|>`, read by tools/solar.py)
    Format.SOLAR: ThinkTags(
        "<|think|>",
        "<|end|>",
        ("<|begin|>assistant", "<|content|>", "<|flush|>"),
        ("<|begin|>assistant<|content|>", "<|begin|>assistant"),
        signs=("<|begin|>assistant<|think|>",),
        message_end="<|end|>",
        keep=(
            "<|think|>",
            "<|end|>",
            "<|begin|>",
            "<|content|>",
            "<|tool_calls|>",
            "<|tool_call:begin|>",
            "<|tool_call:name|>",
            "<|tool_call:args|>",
            "<|tool_call:end|>",
        ),
    ),
    # Muse Glimmer: messages with harmony-like headers; the prompt ends in `<|start|>assistant`, so the output opens
    # with the header's rest. ` to=self` is the reasoning (ended by `<|eom|>`), ` to=user` the answer (ended by
    # `<|eot|>`); a call's message (` to=NAME`) keeps its header for tools/tagged.py's ATEM, which drops it
    Format.MUSE: ThinkTags(
        " to=self<|message|>",
        "<|eom|>",
        ("<|start|>assistant to=user<|message|>", " to=user<|message|>", "<|eot|>"),
        ("<|start|>assistant to=user<|message|>", "<|start|>assistant"),
        reopen=("<|start|>assistant to=self<|message|>",),
        signs=("to=self<|message|>",),
        message_end="<|eom|>",
        keep=("<|eom|>", "<|start|>", "<|message|>"),
    ),
    Format.THINK: ThinkTags("<think>", "</think>"),
}


def message_end(fmt: Format) -> str:
    """The end-of-generation token after which the format's turn goes on, as text for the channel parser (harmony's
    `<|end|>`, Solar Open's `<|end|>`, Muse Glimmer's `<|eom|>`); "" where generation ends at every one."""
    if fmt is Format.HARMONY:
        return "<|end|>"
    tags = THINK_TAGS.get(fmt)
    return tags.message_end if tags else ""


class Thinking(enum.Enum):
    """How the output begins, as far as thinking goes (where a grammar may start)."""

    NONE = "none"  # no thinking: the template knows none, or the prompt closed it (enable_thinking=False)
    MAY = "may"  # a thinking template whose prompt leaves it to the model to open the block
    OPEN = "open"  # the prompt opened the thinking block: the output starts inside it
    HARMONY = "harmony"  # harmony channels: analysis first, then the answer or a call


class State(enum.Enum):
    HEADER = "header"  # harmony: between <|start|> (or the turn's start) and <|message|>
    BODY = "body"  # inside a channel's text
    BETWEEN = "between"  # harmony: after <|end|>, waiting for <|start|>


HARMONY_MARKERS = ("<|start|>", "<|channel|>", "<|message|>", "<|end|>", "<|return|>", "<|call|>", "<|constrain|>")
THINK_MARKERS = THINK_TAGS[Format.THINK].markers

# A header longer than this without <|message|> is not a header: the text is taken as the answer.
MAX_HEADER_CHARS = 96
_CHANNEL_RE = re.compile(r"<\|channel\|>\s*([A-Za-z_]+)")
_RECIPIENT_RE = re.compile(r"(?:^|\s|>)to=([^\s<]+)")


@dataclass
class ChannelParser:
    """Feed generated text; get (channel, text) events. `start_in_thinking`: the prompt opened the thinking block.

    Thinking-block formats (`<think>` and THINK_TAGS' others), when a grammar holds the answer (response_format): once the answer has begun it is text to
    the end, `<think>` and `</think>` included (inside a JSON string they are the answer's, never thinking).
    `sealed`: from the first character (the output cannot open thinking); `seal_at_think_end`: from the
    close marker (`</think>`) that ends the thinking, where the grammar starts. `for_output` picks them."""

    format: Format
    start_in_thinking: bool = False
    seal_at_think_end: bool = False
    sealed: bool = False
    state: State = field(init=False)
    channel: str | None = field(init=False)  # the channel text currently goes to (None inside a header)
    _pending: str = field(init=False, default="")  # held-back text that may start a marker
    _header: str = field(init=False, default="")
    recipient: str | None = field(init=False, default=None)  # the current message's `to=`
    _message: int = field(init=False, default=0)
    _at_start: dict[str, bool] = field(init=False, default_factory=lambda: dict.fromkeys(CHANNELS, True))

    def __post_init__(self) -> None:
        if self.format is Format.HARMONY:
            self.state, self.channel = State.HEADER, None
        else:
            self.state = State.BODY
            self.channel = ANALYSIS if self.start_in_thinking else FINAL

    @property
    def holding(self) -> bool:
        """Some text is held back as a possible start of a marker."""
        return bool(self._pending)

    @classmethod
    def for_output(cls, fmt: Format, thinking: Thinking, answer_grammar: bool = False) -> ChannelParser:
        """The parser for output that begins as `thinking` says; `answer_grammar`: a grammar holds the answer."""
        seal = answer_grammar and fmt is not Format.HARMONY
        return cls(fmt, thinking is Thinking.OPEN, seal_at_think_end=seal, sealed=seal and thinking is Thinking.NONE)

    @property
    def markers(self) -> tuple[str, ...]:
        if self.sealed:  # the answer's own markup (Kimi K3's response tags) is still no answer
            return THINK_TAGS[self.format].answer
        return HARMONY_MARKERS if self.format is Format.HARMONY else THINK_TAGS[self.format].markers

    def feed(self, piece: str) -> list[Event]:
        out: list[Event] = []
        text = self._pending + piece
        self._pending = ""
        while text:
            found = first_marker(text, self.markers)
            if found is None:
                keep = partial_tail(text, self.markers)
                self._text(text[: len(text) - keep], out)
                self._pending = text[len(text) - keep :]
                break
            pos, marker = found
            self._text(text[:pos], out)
            self._marker(marker, out)
            text = text[pos + len(marker) :]
        return _merge(out)

    def finish(self) -> list[Event]:
        out: list[Event] = []
        self._text(self._pending, out)
        self._pending = ""
        if self.state is State.HEADER and self._header:
            self._flush_header_as_final(out)
        return _merge(out)

    # -- internals ---------------------------------------------------------------------------------------

    def _text(self, text: str, out: list[Event]) -> None:
        if not text:
            return
        if self.state is State.HEADER:
            self._header += text
            if len(self._header) > MAX_HEADER_CHARS:
                self._flush_header_as_final(out)
            return
        if self.state is State.BETWEEN:  # text outside any message: the model skipped its header
            self.state, self.channel = State.BODY, FINAL
            self._message += 1
        assert self.channel is not None
        self._emit(self.channel, text, out)

    def _emit(self, channel: str, text: str, out: list[Event]) -> None:
        # Leading whitespace of a channel (the "\n\n" after </think>) is layout, not content.
        if self._at_start[channel]:
            text = text.lstrip()
            if not text:
                return
            self._at_start[channel] = False
        out.append(Event(channel, text, self.recipient, self._message))

    def _flush_header_as_final(self, out: list[Event]) -> None:
        """A header that never reached <|message|>: its channel (if it names one) gets the rest of its text."""
        header, self._header = self._header, ""
        match = _CHANNEL_RE.search(header)
        channel = match.group(1).lower() if match else FINAL
        if channel not in CHANNELS:
            channel = FINAL
        if match:
            header = header[: match.start()] + header[match.end() :]
        for m in HARMONY_MARKERS:
            header = header.replace(m, "")
        self.state, self.channel, self.recipient = State.BODY, channel, None
        self._message += 1
        self._emit(channel, header.removeprefix("assistant"), out)

    def _marker(self, marker: str, out: list[Event]) -> None:
        tags = THINK_TAGS.get(self.format)
        if tags is not None:
            # A stray tag (</think> outside a block) or the answer's markup is dropped, never shown.
            self.channel = ANALYSIS if marker == tags.open or marker in tags.reopen else FINAL
            self.sealed = self.sealed or (marker == tags.close and self.seal_at_think_end)
            return
        handler = _HARMONY_TABLE[(self.state, marker)]
        handler(self, marker, out)

    # harmony transitions, named by what they do; the table below says when each applies
    def _open_header(self, marker: str, out: list[Event]) -> None:
        self.state, self.channel, self._header, self.recipient = State.HEADER, None, "", None
        if marker == "<|channel|>":
            self._header = marker

    def _header_part(self, marker: str, out: list[Event]) -> None:
        self._header += marker

    def _open_body(self, marker: str, out: list[Event]) -> None:
        match = _CHANNEL_RE.search(self._header)
        name = match.group(1).lower() if match else ""
        recipient = _RECIPIENT_RE.search(self._header)
        self.recipient = recipient.group(1) if recipient else None
        if name not in CHANNELS:  # no or unknown channel: a recipient means a tool call, else the answer
            name = COMMENTARY if self.recipient else FINAL
        self.state, self.channel, self._header = State.BODY, name, ""
        self._message += 1

    def _close_body(self, marker: str, out: list[Event]) -> None:
        self.state, self.channel, self.recipient = State.BETWEEN, None, None

    def _header_broken(self, marker: str, out: list[Event]) -> None:
        # <|end|> before <|message|>: what was collected is no header; keep its text as the answer.
        self._flush_header_as_final(out)
        self._close_body(marker, out)

    def _ignore(self, marker: str, out: list[Event]) -> None:
        pass


_H = ChannelParser
_HARMONY_TABLE = {
    **{(State.HEADER, m): _H._header_part for m in ("<|channel|>", "<|constrain|>")},
    (State.HEADER, "<|start|>"): _H._open_header,
    (State.HEADER, "<|message|>"): _H._open_body,
    **{(State.HEADER, m): _H._header_broken for m in ("<|end|>", "<|return|>", "<|call|>")},
    **{(State.BODY, m): _H._close_body for m in ("<|end|>", "<|return|>", "<|call|>")},
    **{(State.BODY, m): _H._open_header for m in ("<|start|>", "<|channel|>")},
    **{(State.BODY, m): _H._ignore for m in ("<|message|>", "<|constrain|>")},
    **{(State.BETWEEN, m): _H._open_header for m in ("<|start|>", "<|channel|>")},
    **{(State.BETWEEN, m): _H._ignore for m in ("<|message|>", "<|constrain|>", "<|end|>", "<|return|>", "<|call|>")},
}


def _merge(events: list[Event]) -> list[Event]:
    merged: list[Event] = []
    for e in events:
        last = merged[-1] if merged else None
        if last and (last.channel, last.recipient, last.message) == (e.channel, e.recipient, e.message):
            merged[-1] = Event(e.channel, last.text + e.text, e.recipient, e.message)
        else:
            merged.append(e)
    return merged


def collect(events: list[Event]) -> dict[str, str]:
    """Channel -> its whole text, in first-appearance order."""
    texts: dict[str, str] = {}
    for e in events:
        texts[e.channel] = texts.get(e.channel, "") + e.text
    return texts


def parse(text: str, fmt: Format, start_in_thinking: bool = False) -> dict[str, str]:
    """Whole-text convenience: channel -> text."""
    parser = ChannelParser(fmt, start_in_thinking)
    return collect(parser.feed(text) + parser.finish())
