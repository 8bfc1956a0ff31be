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
    # Steps a grammar holds: (completion index, the tokens it allows there). The target must beat only those, not
    # the whole vocabulary, so the unconstrained greedy token there can stay another example's.
    held: tuple[tuple[int, tuple[int, ...]], ...] = ()


@dataclass(frozen=True)
class Recipe:
    steps: int  # upper bound; training stops at the margin
    batch: int
    lr: float
    margin: float  # logit gap the target must keep over the runner-up at every completion position
    check_every: int
    long_tokens: int = 512  # an example longer than this (a framework's system prompt) is not padded into a batch of
    long_every: int = 4  # short ones; every long_every-th step is long ones: long_batch of them under their shared
    long_batch: int = 16  # prompt (`forward`), or one alone where they share too little
    check_first: bool = False  # check before the first step (a fine-tune: start on what the model misses)


def collate(examples: Sequence[Example], pad: int, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and next-token targets (-100 off the completion), from token `start` of each sequence on.
    Causal attention never looks right, so the padding needs no attention mask."""
    width = max(len(e.prompt) + len(e.completion) for e in examples) - start
    ids = torch.full((len(examples), width), pad, dtype=torch.long)
    targets = torch.full((len(examples), width), -100, dtype=torch.long)
    for row, e in enumerate(examples):
        seq = (e.prompt + e.completion)[start:]
        ids[row, : len(seq)] = torch.tensor(seq)
        # position t predicts token t + 1
        targets[row, len(e.prompt) - 1 - start : len(seq) - 1] = torch.tensor(e.completion)
    return ids, targets


def held(logits: torch.Tensor, examples: Sequence[Example], start: int = 0) -> torch.Tensor:
    """The logits with every token a grammar does not allow at -inf on the steps it holds (`Example.held`), as the
    grammar leaves them; unchanged where none is held. `start`: the logits begin at that token of each sequence."""
    rows = [(row, len(e.prompt) - 1 - start + k, choice) for row, e in enumerate(examples) for k, choice in e.held]
    if not rows:
        return logits
    mask = torch.zeros(logits.shape[0], logits.shape[1], logits.shape[2], dtype=logits.dtype)
    for row, at, choice in rows:
        mask[row, at] = float("-inf")
        mask[row, at, list(choice)] = 0.0
    return logits + mask


def shared_prefix(prompts: Sequence[Sequence[int]]) -> int:
    """How many leading tokens all the prompts have in common, leaving each at least one of its own (a long
    framework prompt that every example repeats)."""
    if not prompts:
        return 0
    n = min(len(p) for p in prompts) - 1
    first = prompts[0]
    for p in prompts[1:]:
        n = next((i for i in range(n) if p[i] != first[i]), n)
    return max(n, 0)


def forward(
    model: torch.nn.Module, examples: Sequence[Example], pad: int, start: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (held as the grammar holds them) and targets of the examples from token `start` on. With `start`, the
    examples' first `start` tokens are the same (`shared_prefix`): they run once, and their cache is repeated for every
    example, so a batch of examples under one long prompt costs that prompt once. Same logits and gradients as running
    each whole sequence."""
    ids, targets = collate(examples, pad, start)
    if not start:
        return held(model(input_ids=ids).logits, examples), targets
    cache = model(input_ids=torch.tensor([examples[0].prompt[:start]]), use_cache=True).past_key_values
    cache.batch_repeat_interleave(len(examples))
    positions = torch.arange(start, start + ids.shape[1]).expand_as(ids)
    logits = model(input_ids=ids, cache=cache, position_ids=positions).logits
    return held(logits, examples, start), targets


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


def length_batches(examples: Sequence[Example], batch: int, tokens: int = 8192) -> list[list[int]]:
    """Indices grouped by length (at most `batch` examples and about `tokens` padded tokens a group), so a
    few long prompts do not pad every short one to their length."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].prompt) + len(examples[i].completion))
    groups: list[list[int]] = []
    for i in order:
        width = len(examples[i].prompt) + len(examples[i].completion)
        if groups and len(groups[-1]) < batch and width * (len(groups[-1]) + 1) <= tokens:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def split_long(examples: Sequence[Example], long_tokens: int) -> tuple[list[int], list[int], int]:
    """Short and long examples' indices, and the prompt the long ones share (`shared_prefix`; 0 where they share
    less than half of `long_tokens`, so each runs whole)."""
    is_long = [len(e.prompt) + len(e.completion) > long_tokens for e in examples]
    short = [i for i, big in enumerate(is_long) if not big]
    long = [i for i, big in enumerate(is_long) if big]
    start = shared_prefix([examples[i].prompt for i in long])
    return short, long, start if start >= long_tokens // 2 else 0


def margins(
    model: torch.nn.Module, examples: Sequence[Example], pad: int, batch: int, long_tokens: int = 512
) -> torch.Tensor:
    """For every completion token, in example order: target logit minus the best other logit (positive = greedy
    hit)."""
    gaps: list[torch.Tensor | None] = [None] * len(examples)
    short, long, start = split_long(examples, long_tokens)
    whole = short if start else short + long  # each sequence run whole, batched by length
    groups = [([whole[i] for i in g], 0) for g in length_batches([examples[i] for i in whole], batch)]
    if start:  # the long ones half a batch at a time under their shared prompt
        groups += [(long[k : k + batch // 2], start) for k in range(0, len(long), batch // 2)]
    model.eval()
    with torch.no_grad():
        for group, at in groups:
            logits, targets = forward(model, [examples[i] for i in group], pad, at)
            logits = logits.float()
            for row, i in enumerate(group):
                keep = targets[row] != -100
                picked = logits[row][keep]
                gold = targets[row][keep]
                target_logit = picked.gather(1, gold[:, None]).squeeze(1)
                picked.scatter_(1, gold[:, None], float("-inf"))
                gaps[i] = target_logit - picked.max(dim=1).values
    model.train()
    return torch.cat([g for g in gaps if g is not None])


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
    short, long, start = split_long(examples, recipe.long_tokens)
    long_batch = min(recipe.long_batch, len(long)) if start else 1
    batches = minibatches(len(short), recipe.batch, gen)
    long_batches = minibatches(len(long), long_batch, gen) if long else None
    # Examples below the margin at the last check fill half of each short batch and every long step, so the few
    # that still miss are not waited for at random; a long step comes only while a long one misses (else 1 in 4),
    # and twice as often while no short one does.
    weak_short: list[int] = []
    weak_long: list[int] = []

    def check(step: int) -> bool:
        nonlocal weak_short, weak_long
        sync()
        gap = margins(model, examples, pad, 64, recipe.long_tokens)
        worst = [g.min().item() for g in gap.split([len(e.completion) for e in examples])]
        weak_short = [i for i in short if worst[i] < recipe.margin]
        weak_long = [i for i in long if worst[i] < recipe.margin]
        log(
            f"  step {step:4d}  {time.perf_counter() - t0:5.0f}s  hits {(gap > 0).float().mean():.3f}"
            f"  min margin {gap.min():.2f}  below margin {len(weak_short)} short, {len(weak_long)} long"
            + "".join(f"\n    {examples[i].label}: {worst[i]:.2f}" for i in (weak_short + weak_long)[:4])
        )
        return gap.min().item() >= recipe.margin

    def next_batch(step: int) -> tuple[list[Example], int]:
        """The step's examples and the prompt they share (0: none)."""
        every = recipe.long_every if weak_short else max(1, recipe.long_every // 2)  # only long ones miss: more
        if long and step % every == 0 and (weak_long or step % (4 * recipe.long_every) == 0):
            assert long_batches is not None
            picked = [long[i] for i in next(long_batches)]
            if weak_long:  # half of them (all, for one alone) from those that miss
                half = (long_batch + 1) // 2
                extra = torch.randint(len(weak_long), (half,), generator=gen).tolist()
                picked = [weak_long[i] for i in extra] + picked[half:]
            return [examples[i] for i in picked], start
        picked = [short[i] for i in next(batches)]
        if weak_short:
            half = recipe.batch // 2
            extra = torch.randint(len(weak_short), (half,), generator=gen).tolist()
            picked = [weak_short[i] for i in extra] + picked[half:]
        return [examples[i] for i in picked], 0

    def sync() -> None:
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(rounding[name](masters[name]))

    model.train()
    t0 = time.perf_counter()
    if recipe.check_first and check(0):
        return 0
    for step in range(1, recipe.steps + 1):
        sync()
        batch, at = next_batch(step)
        logits, targets = forward(model, batch, pad, at)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
        model.zero_grad(set_to_none=True)
        loss.backward()
        for name, p in params.items():
            masters[name].grad = p.grad
        torch.nn.utils.clip_grad_norm_(masters.values(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if (step % recipe.check_every == 0 or step == recipe.steps) and check(step):
            return step
    sync()
    return recipe.steps
