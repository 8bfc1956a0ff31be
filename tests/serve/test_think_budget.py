"""The thinking budget's count (serve/engine/budget.py), fed as the engine feeds it: one token's text at a time,
split at every position; and which chats get a budget (serve/chat/budget.py)."""

from __future__ import annotations

import pytest

from serve.chat.budget import HARMONY_TO_FINAL, think_budget
from serve.chat.channels import Thinking
from serve.engine.budget import BudgetTracker, ThinkBudget

THINK = ThinkBudget(3, "<think>", "</think>", inside=False)


def run(budget: ThinkBudget, pieces: list[str]) -> list[int]:
    """The indexes of the pieces before which the engine would force the close (feeding the close's text then, as
    the engine writes it)."""
    tracker, forced = BudgetTracker(budget), []
    for i, piece in enumerate(pieces):
        if tracker.due():
            forced.append(i)
            tracker.forced()
            tracker.feed(budget.close)
        tracker.feed(piece)
    return forced


def splits(text: str) -> list[list[str]]:
    return [[text[:i], text[i:]] for i in range(len(text) + 1)]


def test_closes_after_the_budget_counted_from_the_open_marker() -> None:
    # 1 token opens, then a, b, c: the fourth thinking token is replaced by the close
    assert run(THINK, ["<think>", "a", "b", "c", "d", "e"]) == [4]
    assert run(THINK, ["<think>", "a", "b", "</think>", "x", "y"]) == []  # closed in time by the model
    assert run(THINK, ["x", "y", "z", "w"]) == []  # never opened: an answer is not thinking
    assert run(ThinkBudget(0, "<think>", "</think>", inside=True), ["a"]) == [0]
    assert run(ThinkBudget(2, "<think>", "</think>", inside=True), ["a", "b", "c"]) == [2]


def test_markers_split_across_tokens_at_every_position() -> None:
    for head in splits("<think>"):
        head = [p for p in head if p]  # an empty piece is a token too (half a character) and would count
        assert run(THINK, [*head, "a", "b", "c", "d"]) == [len(head) + 3]
    for closing in splits("</think>"):
        # the model's close arrives within the budget however it is split (its pieces count as thinking tokens)
        assert run(ThinkBudget(4, "<think>", "</think>"), ["<think>", "a", *closing, "x", "y", "z"]) == []


def test_a_think_marker_after_the_answer_began_is_text() -> None:
    # in a JSON answer's string, or after the thinking closed: never thinking, never a forced close
    assert run(THINK, ['{"a": "', "<think>", "x", "y", "z", "w"]) == []
    assert run(THINK, ["<think>", "a", "</think>", "{", "<think>", "b", "c", "d", "e"]) == []
    assert run(THINK, ["<think>", "a", "b", "c", "d", "<think>", "e", "f", "g", "h"]) == [4]


def test_without_an_answer_grammar_every_think_block_counts() -> None:
    """Not sealed (no grammar holds the answer): the channel parser takes a later `<think>` for thinking, so the
    budget covers it too, and one opened after the budget is spent is closed at once."""
    free = ThinkBudget(3, "<think>", "</think>", only_first=False)
    assert run(free, ["<think>", "a", "b", "</think>", "x", "<think>", "c", "d", "e"]) == [7]
    assert run(free, ["<think>", "a", "b", "c", "d", "x", "<think>", "e"]) == [4, 7]
    assert think_budget(5, Thinking.MAY, False, 100, tools=False, sealed=False).only_first is False
    assert think_budget(5, Thinking.MAY, False, 100, tools=False, sealed=True).only_first is True


def test_harmony_budget_covers_every_analysis_message() -> None:
    harmony = ThinkBudget(3, "<|channel|>analysis<|message|>", "<|end|>", only_first=False)
    header = ["<|channel|>", "analysis", "<|message|>"]
    pieces = [*header, "a", "b", "<|end|>", "<|start|>", "assistant", *header, "c", "d", "e"]
    assert run(harmony, pieces) == [len(pieces) - 2]  # a, b, then c: the budget is spent
    # re-opened after a forced close: closed at once
    pieces = [*header, "a", "b", "c", "d", "<|start|>", "assistant", *header, "e"]
    assert run(harmony, pieces) == [6, len(pieces) - 1]


def test_open_marker_and_thinking_in_one_piece() -> None:
    # the token that opens does not count, whatever follows the marker in it
    assert run(THINK, ["<think>ab", "c", "d", "e", "f"]) == [4]


@pytest.mark.parametrize("thinking", list(Thinking))
def test_which_chats_get_a_budget(thinking: Thinking) -> None:
    asked = think_budget(5, thinking, forced_answer=False, max_tokens=100, tools=False)
    default_forced = think_budget(None, thinking, forced_answer=True, max_tokens=100, tools=True)
    free = think_budget(None, thinking, forced_answer=False, max_tokens=100, tools=False)
    assert free is None  # no request, no grammar waiting: thinking is the model's business
    if thinking is Thinking.NONE:
        assert asked is None and default_forced is None
        return
    assert asked is not None and asked.tokens == 5
    assert default_forced is not None and default_forced.tokens == 50
    assert asked.inside is (thinking is Thinking.OPEN)
    if thinking is Thinking.HARMONY:
        assert asked.close == HARMONY_TO_FINAL and default_forced.close == "<|end|>"
