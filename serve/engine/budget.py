"""A thinking budget: once a model has thought for `tokens` tokens without closing its thinking, the engine writes
the close marker itself (budget forcing, as in s1 and vLLM's thinking budget), so the answer still comes.

It matters most where a grammar holds the answer (a forced tool call, a JSON response format): the grammar waits
for the thinking to end, and a model sampling at a high temperature may never end it on its own, running to
max_tokens with no answer at all. The forced tokens go through the sampler chain like sampled ones, so a grammar
sees the close marker and goes on from there (the engine writes a token only where the grammar allows it).

`BudgetTracker` is pure: `feed(text)` takes each generated piece; `due()` says when the close must be written.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from serve.engine.stops import partial_tail


@dataclass(frozen=True)
class ThinkBudget:
    tokens: int  # thinking tokens allowed before the close is forced (0: close at once)
    open: str  # the marker that opens the thinking (`<think>`; harmony: the analysis header)
    close: str  # what the engine writes when the budget is spent (the close marker, and what must follow it)
    inside: bool = False  # the prompt opened the thinking: the output starts inside it
    # `<think>`: only a block the output starts with is thinking (a `<think>` later, in the answer or a JSON string,
    # is text). Harmony: an analysis message may come after others, and each later one is closed at once.
    only_first: bool = True


class Where(enum.Enum):
    BEFORE = "before"  # the thinking has not opened yet
    INSIDE = "inside"
    AFTER = "after"  # closed, by the model or by force


@dataclass
class BudgetTracker:
    budget: ThinkBudget
    where: Where = field(init=False)
    spent: int = field(default=0, init=False)  # thinking tokens so far (all blocks, where there may be several)
    _tail: str = field(default="", init=False)  # the end of the text that may start the awaited marker

    def __post_init__(self) -> None:
        self.where = Where.INSIDE if self.budget.inside else Where.BEFORE

    def due(self) -> bool:
        """Whether the close must be written before the next token is sampled."""
        return self.where is Where.INSIDE and self.spent >= self.budget.tokens

    def feed(self, text: str) -> None:
        """One generated token's text (possibly empty: a partial UTF-8 character)."""
        if self.where is Where.AFTER and self.budget.only_first:
            return
        was_inside = self.where is Where.INSIDE
        self._scan(text)
        if was_inside and self.where is Where.INSIDE:  # neither the token that opens nor the one that closes
            self.spent += 1

    def forced(self) -> None:
        """The engine wrote the close (its text is fed next, as the tokens are written)."""
        self.where = Where.AFTER
        self._tail = ""

    def _scan(self, text: str) -> None:
        if self.where is Where.AFTER and self.budget.only_first:
            return
        text = self._tail + text
        self._tail = ""
        marker = self.budget.close if self.where is Where.INSIDE else self.budget.open
        at = text.find(marker)
        if at == -1:
            keep = partial_tail(text, (marker,))
            if self.where is Where.BEFORE and self.budget.only_first and text[: len(text) - keep].strip():
                self.where = Where.AFTER  # the output began with something else: it does not think
                return
            self._tail = text[len(text) - keep :]
            return
        if self.where is Where.INSIDE:
            self.where = Where.AFTER
        elif self.where is Where.BEFORE and self.budget.only_first and text[:at].strip():
            self.where = Where.AFTER
            return
        else:
            self.where = Where.INSIDE
        self._scan(text[at + len(marker) :])
