"""fit.held: a grammar-held step trains and measures its target against the grammar's choices only. fit.forward:
examples under one long prompt run it once, with the logits and gradients of running each whole."""

from __future__ import annotations

import pytest
import torch

from models.demo.fit import Example, forward, held, shared_prefix


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


def tiny(kind: str) -> torch.nn.Module:
    from transformers import GptOssConfig, GptOssForCausalLM, Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    common = {"vocab_size": 50, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2}
    common |= {"num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "max_position_embeddings": 256}
    if kind == "qwen3":
        return Qwen3ForCausalLM(Qwen3Config(**common))
    model = GptOssForCausalLM(  # a sliding window shorter than the shared prompt, as demo-harmony's
        GptOssConfig(
            **common,
            num_local_experts=4,
            num_experts_per_tok=2,
            sliding_window=6,
            layer_types=["sliding_attention", "full_attention"],
        )
    )
    model.set_experts_implementation("eager")
    return model


@pytest.mark.parametrize("kind", ["qwen3", "gpt-oss"])
def test_a_shared_prompt_runs_once_with_the_same_logits_and_gradients(kind: str) -> None:
    model = tiny(kind)
    model.train()
    g = torch.Generator().manual_seed(1)
    system = torch.randint(1, 50, (20,), generator=g).tolist()
    examples = [
        Example(system + torch.randint(1, 50, (n,), generator=g).tolist(), [7, 8, 9][: n % 3 + 1], f"e{n}")
        for n in (2, 5, 3)
    ]
    start = shared_prefix([e.prompt for e in examples])
    assert start >= 20

    def loss_and_grads(at: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        logits, targets = forward(model, examples, 0, at)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    whole, whole_grads = loss_and_grads(0)
    shared, shared_grads = loss_and_grads(start)
    assert torch.allclose(whole, shared, atol=1e-5)
    assert len(whole_grads) == len(shared_grads)
    for a, b in zip(whole_grads, shared_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def test_shared_prefix_leaves_every_prompt_a_token_of_its_own() -> None:
    assert shared_prefix([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 9]]) == 2
    assert shared_prefix([[1, 2, 3], [1, 2, 3, 4]]) == 2
    assert shared_prefix([[5, 6]]) == 1
    assert shared_prefix([]) == 0
