"""Content blocks from the chat core's events: the shape Anthropic Messages and OpenAI Responses share.

Both APIs give an answer as a list of blocks (Anthropic's content blocks, Responses' output items): thinking,
text, and tool calls, each opened, filled by deltas and closed, in the order the model produced them. The
`Blocks` state machine turns chat events (serve/chat/core.py) into that list, pure and incremental, so a whole
response is the same machine fed to the end and a stream is its steps sent as they come: the two agree by
construction.

- `analysis` and `commentary` text is one `thinking` block (a channel change inside it is a blank line);
  `final` text is a `text` block; each call is its own `call` block (its id and name at the start, its
  arguments' JSON as the deltas).
- Text is trimmed as whole responses trim it: a block opens at its first non-blank character and blank text
  at its end is held back until more text follows, so a block is never only whitespace.
- With `thinking=False` thinking text is dropped (Anthropic without extended thinking).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from serve.chat.channels import FINAL
from serve.chat.core import ChatEvent, Text, ToolCallArgs, ToolCallStart

THINKING, TEXT, CALL = "thinking", "text", "call"


@dataclass(frozen=True)
class Open:
    index: int  # the block's position in the answer: 0, 1, ...
    kind: str  # thinking, text or call
    call_id: str = ""  # call blocks
    name: str = ""


@dataclass(frozen=True)
class Delta:
    index: int
    text: str


@dataclass(frozen=True)
class Close:
    index: int
    kind: str
    text: str  # the block's whole text (a call's arguments)
    call_id: str = ""
    name: str = ""


Step = Open | Delta | Close


@dataclass
class Block:
    kind: str
    text: str = ""
    call_id: str = ""
    name: str = ""


@dataclass
class Blocks:
    thinking: bool = True
    blocks: list[Block] = field(default_factory=list)
    _open: Block | None = None
    _channel: str | None = None  # the channel of the open thinking block's last text
    _held: str = ""  # blank text not yet sent: it goes out only if more text follows in the same block
    _pending: str | None = None  # a text kind waiting for its first non-blank character to open

    def feed(self, event: ChatEvent) -> list[Step]:
        """One chat event (Finish and Error are the caller's: call `close` then)."""
        if isinstance(event, ToolCallStart):
            out = self.close()
            out.append(self._start(Block(CALL, call_id=event.id, name=event.name)))
            return out
        if isinstance(event, ToolCallArgs):
            if self._open is None or self._open.kind != CALL:
                return []  # arguments of no open call: never produced by the parsers
            return self._text(event.text)
        if not isinstance(event, Text):
            return []
        kind = TEXT if event.channel == FINAL else THINKING
        if kind == THINKING and not self.thinking:
            return []
        out = []
        current = self._open.kind if self._open else self._pending
        if current != kind:
            out += self.close()
            self._pending = kind
        elif kind == THINKING and self._channel not in (None, event.channel) and self._open is not None:
            self._held = "\n\n"  # analysis then commentary: a blank line between them, as whole responses join
        self._channel = event.channel
        return out + self._text(event.text)

    def close(self) -> list[Step]:
        """Close the open block (blank text held at its end is dropped)."""
        block, self._open, self._pending, self._held, self._channel = self._open, None, None, "", None
        if block is None:
            return []
        return [Close(len(self.blocks) - 1, block.kind, block.text, block.call_id, block.name)]

    def _start(self, block: Block) -> Open:
        self.blocks.append(block)
        self._open, self._pending = block, None
        return Open(len(self.blocks) - 1, block.kind, block.call_id, block.name)

    def _text(self, text: str) -> list[Step]:
        block = self._open
        if block is None or not block.text:
            text = text.lstrip()  # a block starts at its first non-blank character
            if not text:
                return []
        out: list[Step] = []
        if block is None:
            assert self._pending is not None
            out.append(self._start(block := Block(self._pending)))
        body = text.rstrip()
        if not body:
            self._held += text
            return out
        sent, self._held = self._held + body, text[len(body) :]
        block.text += sent
        out.append(Delta(len(self.blocks) - 1, sent))
        return out
