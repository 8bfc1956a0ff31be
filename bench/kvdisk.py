"""The prompt cache's disk tier on the laptop stack: two models whose RAM budget holds one (A: the 330M bench model,
bench/models.py; B: demo-think), both `preload = false`.

A 6-turn conversation of about 2,000 tokens on A (ChatML text over /v1/completions, 16-token answers, every turn
resending the whole history); then, each a turn of the same conversation:
- after a restart of the whole stack (A loads at its first request);
- after a swap: A unloaded (admin unload, timed: the unload time), one request to B, then A's next turn;
- warm: A's next turn with nothing between.
And a short cold request to A after a swap (what the reload alone costs). All of it twice, in two stacks: the disk
tier on (the default size) and off (`cache_disk_gb = 0`: the history is decoded again). Time to first token of
streamed requests; the bytes a 2,000-token sequence takes on disk (the largest file's bytes per token x 2,000).

Goals: the turn after a swap <= reload + 2 x warm turn, and <= 0.3 x the same turn with the tier off.
Run alone: python -m bench.kvdisk [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.common import Row
from bench.streams import THREADS, Conversation, build_model
from testkit.stack import StackProcess

ROOT = Path(__file__).resolve().parents[1]
A, B = "bench-a", "demo-b"
SYSTEM_CHARS = 1_500  # the bench model tokenizes a character a token: with six turns the history is ~2,000
TURNS = 6


@dataclass
class Turn:
    ttft: float  # seconds
    text: str
    prompt_tokens: int
    cached_tokens: int


def turn(api: str, model: str, prompt: str, max_tokens: int = 16) -> Turn:
    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    began = time.perf_counter()
    first: float | None = None
    text, usage = "", dict[str, Any]()
    with httpx.stream("POST", api + "/completions", json=body, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and chunk["choices"][0].get("text"):
                first = first or time.perf_counter()
                text += chunk["choices"][0]["text"]
            usage = chunk.get("usage") or usage
    details = usage.get("prompt_tokens_details") or {}
    return Turn(
        (first or time.perf_counter()) - began, text, usage.get("prompt_tokens", 0), details.get("cached_tokens", 0)
    )


def models_toml(sources: dict[str, Path], cache_disk_gb: float | None) -> str:
    extra = "" if cache_disk_gb is None else f"cache_disk_gb = {cache_disk_gb}\n"
    return "".join(
        f'[[models]]\nname = "{name}"\nsource = "{source}"\nctx_size = 4096\nmax_concurrent = 2\n'
        f"threads = {THREADS}\npreload = false\n{extra}"
        for name, source in sources.items()
    )


@contextmanager
def cache_env(folder: Path) -> Iterator[None]:
    """HEARTH_CACHE for the stacks started inside (their kv/ and converted GGUFs), ours again afterwards."""
    before = os.environ.get("HEARTH_CACHE")
    os.environ["HEARTH_CACHE"] = str(folder)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("HEARTH_CACHE", None)
        else:
            os.environ["HEARTH_CACHE"] = before


def admin(stack: StackProcess, action: str, model: str) -> float:
    """POST /models/ACTION; its seconds."""
    began = time.perf_counter()
    r = httpx.post(f"{stack.router}/models/{action}", json={"model": model}, headers=stack.admin, timeout=600)
    r.raise_for_status()
    return time.perf_counter() - began


@dataclass
class Figures:
    warm: list[float] = field(default_factory=list)
    restart: list[float] = field(default_factory=list)
    swap: list[float] = field(default_factory=list)
    reload: list[float] = field(default_factory=list)
    unload: list[float] = field(default_factory=list)
    history_tokens: list[int] = field(default_factory=list)
    cached: list[int] = field(default_factory=list)  # cached_tokens of the swap turn


def one_round(folder: Path, seed: int, sources: dict[str, Path], budget_gb: float, tier: float | None) -> Figures:
    path = folder / f"stack-{seed}-{tier}.toml"
    path.write_text(f"[router]\nport = 0\n[budget]\nram_gb = {budget_gb:.4f}\n" + models_toml(sources, tier))
    state = folder / f"state-{seed}-{tier}"
    f = Figures()
    conv = Conversation(seed, system_chars=SYSTEM_CHARS, question_chars=40)
    stack = StackProcess([str(path)], state)
    try:
        for _ in range(TURNS):
            t = turn(stack.api, A, conv.ask())
            conv.answer(t.text)
        stack.stop()
        stack = StackProcess([str(path)], state)
        t = turn(stack.api, A, conv.ask())  # after a restart of the whole stack (A loads here)
        conv.answer(t.text)
        f.restart.append(t.ttft)
        f.unload.append(admin(stack, "unload", A))
        turn(stack.api, B, "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n", 4)
        t = turn(stack.api, A, conv.ask())  # after a swap
        conv.answer(t.text)
        f.swap.append(t.ttft)
        f.history_tokens.append(t.prompt_tokens)
        f.cached.append(t.cached_tokens)
        t = turn(stack.api, A, conv.ask())  # warm: nothing between
        conv.answer(t.text)
        f.warm.append(t.ttft)
        admin(stack, "unload", A)
        turn(stack.api, B, "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n", 4)
        f.reload.append(turn(stack.api, A, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", 4).ttft)
    finally:
        stack.stop()
    return f


def budget_for(folder: Path, sources: dict[str, Path]) -> float:
    """GiB holding the larger model and half the smaller: one at a time. Read from the stack's own charges."""
    path = folder / "probe.toml"
    path.write_text("[router]\nport = 0\n" + models_toml(sources, 0))
    stack = StackProcess([str(path)], folder / "probe-state")
    try:
        charges = {m["id"]: m["ram_bytes"] for m in httpx.get(stack.api + "/models", timeout=10).json()["data"]}
    finally:
        stack.stop()
    big, small = max(charges.values()), min(charges.values())
    return (big + small / 2) / 2**30


def sequence_bytes(kv: Path, tokens: int = 2000) -> float:
    """Bytes a `tokens`-token sequence takes on disk: the largest file's bytes per token (its header says how many
    tokens it holds: serve/engine/disk_cache.py HEADER)."""
    files = list(kv.glob(f"{A}-*/*.kv"))
    if not files:
        return 0.0
    largest = max(files, key=lambda p: p.stat().st_size)
    with largest.open("rb") as fh:
        n_tokens = struct.unpack_from("<8sI32sIIQI", fh.read(64))[3]
    return largest.stat().st_size / n_tokens * tokens


def run(quick: bool = False) -> list[Row]:
    demo = ROOT / "models" / "demo" / "demo-think"
    sources = {A: build_model(), B: demo}
    rounds = 1 if quick else 3
    with tempfile.TemporaryDirectory() as tmp, cache_env(Path(tmp) / "cache"):
        folder = Path(tmp)
        budget = budget_for(folder, sources)
        on, off = Figures(), Figures()
        for r in range(rounds):
            for figures, tier in ((on, None), (off, 0.0)):
                got = one_round(folder, 1000 + r, sources, budget, tier)
                for name in ("warm", "restart", "swap", "reload", "unload", "history_tokens", "cached"):
                    getattr(figures, name).extend(getattr(got, name))
        per_2k = sequence_bytes(folder / "cache" / "kv")

    def med(values: list[float]) -> float:
        return statistics.median(values) * 1000

    warm, reload, swap, swap_off = med(on.warm), med(on.reload), med(on.swap), med(off.swap)
    restart, restart_off = med(on.restart), med(off.restart)
    unload, unload_off = med(on.unload), med(off.unload)
    history = int(statistics.median(on.history_tokens))
    bound = reload + 2 * warm
    return [
        Row("kvdisk", f"A's warm turn ({history}-token history) to first token", warm, "ms", None, "", None),
        Row("kvdisk", "short cold request to A after a swap (the reload alone)", reload, "ms", None, "", None),
        Row(
            "kvdisk",
            f"A's turn after a swap, disk tier on ({int(statistics.median(on.cached))} cached) vs off (re-decoded)",
            swap,
            "ms",
            swap / swap_off,
            "<= 0.3 x",
            swap / swap_off <= 0.3,
        ),
        Row(
            "kvdisk",
            "A's turn after a swap vs reload + 2 x warm turn",
            swap,
            "ms",
            swap / bound,
            "<= 1 x",
            swap <= bound,
        ),
        Row("kvdisk", "A's turn after a swap, disk tier off", swap_off, "ms", None, "", None),
        Row(
            "kvdisk",
            "A's turn after a restart of the whole stack, tier on vs off",
            restart,
            "ms",
            restart / restart_off,
            "",
            None,
        ),
        Row("kvdisk", "unloading A, tier on (states written) vs off", unload, "ms", unload / unload_off, "", None),
        Row("kvdisk", "disk bytes of a 2,000-token sequence of A", per_2k / 1e6, "MB", None, "", None),
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="bench.kvdisk", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one round instead of three")
    for row in run(parser.parse_args().quick):
        print(row.markdown())
