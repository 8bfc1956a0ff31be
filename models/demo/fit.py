"""The training loop of the demo models: memorize a small set of prompt -> completion examples.

The storage precision is in the loop (straight-through estimator): forward and backward run on the
rounded weights (bf16, or MXFP4 pack/unpack for gpt-oss experts), Adam updates fp32 master copies. So the
saved checkpoint is exactly the network that was trained and measured.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from convert.mxfp4 import pack_mxfp4, unpack_mxfp4

MXFP4_PARAMS = re.compile(r"mlp\.experts\.(gate_up_proj|down_proj)$")


@dataclass(frozen=True)
class Example:
    prompt: list[int]
    completion: list[int]
    label: str


@dataclass(frozen=True)
class Recipe:
    steps: int  # upper bound; training stops at the margin
    batch: int
    lr: float
    margin: float  # logit gap the target must keep over the runner-up at every completion position
    check_every: int


def collate(examples: Sequence[Example], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and next-token targets (-100 off the completion). Causal attention never looks
    right, so the padding needs no attention mask."""
    width = max(len(e.prompt) + len(e.completion) for e in examples)
    ids = torch.full((len(examples), width), pad, dtype=torch.long)
    targets = torch.full((len(examples), width), -100, dtype=torch.long)
    for row, e in enumerate(examples):
        seq = e.prompt + e.completion
        ids[row, : len(seq)] = torch.tensor(seq)
        # position t predicts token t + 1
        targets[row, len(e.prompt) - 1 : len(seq) - 1] = torch.tensor(e.completion)
    return ids, targets


# --- storage precision in the loop ----------------------------------------------------------------


def bf16_round(w: torch.Tensor) -> torch.Tensor:
    return w.to(torch.bfloat16).to(w.dtype)


def mxfp4_round(w: torch.Tensor) -> torch.Tensor:
    """transformers keeps experts as [E, in, out]; the checkpoint packs [E, out, in] along `in`."""
    blocks, scales = pack_mxfp4(w.detach().transpose(-1, -2).contiguous().numpy())
    return torch.from_numpy(unpack_mxfp4(blocks, scales)).transpose(-1, -2).contiguous().to(w.dtype)


def storage_rounding(model: torch.nn.Module) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    return {name: mxfp4_round if MXFP4_PARAMS.search(name) else bf16_round for name, _ in model.named_parameters()}


# --- training -------------------------------------------------------------------------------------


def margins(model: torch.nn.Module, examples: Sequence[Example], pad: int, batch: int) -> torch.Tensor:
    """For every completion token: target logit minus the best other logit (positive = greedy hit)."""
    gaps = []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(examples), batch):
            ids, targets = collate(examples[start : start + batch], pad)
            logits = model(input_ids=ids).logits.float()
            keep = targets != -100
            picked = logits[keep]
            gold = targets[keep]
            target_logit = picked.gather(1, gold[:, None]).squeeze(1)
            picked.scatter_(1, gold[:, None], float("-inf"))
            gaps.append(target_logit - picked.max(dim=1).values)
    model.train()
    return torch.cat(gaps)


def minibatches(n: int, size: int, gen: torch.Generator) -> Iterator[list[int]]:
    while True:
        order = torch.randperm(n, generator=gen).tolist()
        for start in range(0, n - size + 1, size):
            yield order[start : start + size]


def fit(
    model: torch.nn.Module, examples: list[Example], pad: int, recipe: Recipe, seed: int, log: Callable[[str], None]
) -> int:
    """Train with the straight-through estimator: forward/backward on rounded weights, Adam on fp32
    masters. Returns the number of steps taken; leaves the rounded weights in the model."""
    rounding = storage_rounding(model)
    params = dict(model.named_parameters())
    masters = {name: p.detach().clone().requires_grad_(True) for name, p in params.items()}
    opt = torch.optim.AdamW(masters.values(), lr=recipe.lr, betas=(0.9, 0.98), weight_decay=0.0)
    warmup = 30

    def lr_factor(step: int) -> float:  # linear warmup, then cosine down to 5 % at the step cap
        if step < warmup:
            return (step + 1) / warmup
        return 0.05 + 0.475 * (1 + math.cos(math.pi * (step - warmup) / max(1, recipe.steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    gen = torch.Generator().manual_seed(seed)
    batches = minibatches(len(examples), recipe.batch, gen)

    def sync() -> None:
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(rounding[name](masters[name]))

    model.train()
    t0 = time.perf_counter()
    for step in range(1, recipe.steps + 1):
        sync()
        ids, targets = collate([examples[i] for i in next(batches)], pad)
        logits = model(input_ids=ids).logits
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
        model.zero_grad(set_to_none=True)
        loss.backward()
        for name, p in params.items():
            masters[name].grad = p.grad
        torch.nn.utils.clip_grad_norm_(masters.values(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % recipe.check_every == 0 or step == recipe.steps:
            sync()
            gap = margins(model, examples, pad, 64)
            log(
                f"  step {step:4d}  {time.perf_counter() - t0:5.0f}s  loss {loss.item():.4f}"
                f"  hits {(gap > 0).float().mean():.3f}  min margin {gap.min():.2f}"
            )
            if gap.min() >= recipe.margin:
                return step
    sync()
    return recipe.steps
