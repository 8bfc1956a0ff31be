"""fit.held: a grammar-held step trains and measures its target against the grammar's choices only."""

from __future__ import annotations

import torch

from models.demo.fit import Example, held


def test_held_step_is_a_softmax_over_the_choice_alone() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    examples = [Example([1, 2, 3], [4, 5], "held", held=((0, (1, 4, 6)),)), Example([1, 2], [3], "free")]
    out = held(logits, examples)
    at = len(examples[0].prompt) - 1  # the step that predicts the first completion token
    subset = logits[0, at, [1, 4, 6]]
    want = subset - subset.logsumexp(0)  # the log-probabilities over the choice, by hand
    got = out[0, at].log_softmax(0)
    assert torch.allclose(got[[1, 4, 6]], want)
    assert torch.isinf(got[[0, 2, 3, 5]]).all()
    # every other step and example keeps the whole vocabulary
    keep = torch.ones(2, 5, dtype=torch.bool)
    keep[0, at] = False
    assert torch.equal(out[keep], logits[keep])


def test_no_choice_leaves_the_logits_alone() -> None:
    logits = torch.randn(1, 4, 6)
    assert held(logits, [Example([1], [2, 3], "free")]) is logits
