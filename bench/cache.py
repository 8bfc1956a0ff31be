"""Prompt-cache benchmarks, each measured against a baseline in the same run:

- multi-turn: a 6-turn conversation over a ~1,900-token history with 16-token answers (every turn resends the
  whole history): mean time to first token of turns 2..6 over turn 1's, ours and llama-server's (330M q8_0,
  both up at once, conversations interleaved). Goal: ours <= llama-server's.
- sixteen: 16 conversations taking turns over 4 sequences: share of the prompt tokens of turns 2 and 3 served
  from the cache, with the host-RAM cache and without (--cache-ram 0).
- router: two replicas behind the router, 8 concurrent conversations x 6 turns: sum of cached_tokens over sum of
  prompt_tokens under prefix, least_connections and round_robin. Goal: prefix clearly highest.
- swa: KV memory llama.cpp allocates for sliding-window models with and without the full-size SWA cache
  (gemma-3-1b's and gpt-oss-20b's attention shapes, the serve defaults: 2 sequences x 4,096 tokens).

Conversations are /v1/completions with ChatML text built here (the synthetic models have no template), so both
servers see the same tokens. Run alone: python -m bench.cache [multi_turn|sixteen|router|swa ...] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np

from bench import llama_server
from bench.common import Row
from bench.models import CACHE, qwen2_330m, smollm_135m_q4
from bench.streams import THREADS, Conversation, serve_argv, server
from hearth_common.procs import free_port
from testkit.procs import ServerProcess

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Turn:
    ttft: float
    text: str
    prompt_tokens: int = 0
    cached_tokens: int = 0


async def turn(session: aiohttp.ClientSession, url: str, prompt: str, max_tokens: int = 16) -> Turn:
    body = {
        "model": "m",
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    t0 = time.perf_counter()
    first = None
    text = ""
    usage: dict = {}
    async with session.post(url + "/v1/completions", json=body) as response:
        if response.status != 200:
            raise RuntimeError(f"{url}: {response.status} {await response.text()}")
        async for line in response.content:
            if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and chunk["choices"][0].get("text"):
                first = first or time.perf_counter()
                text += chunk["choices"][0]["text"]
            usage = chunk.get("usage") or usage
    details = usage.get("prompt_tokens_details") or {}
    return Turn(
        (first or time.perf_counter()) - t0, text, usage.get("prompt_tokens", 0), details.get("cached_tokens", 0)
    )


async def converse(url: str, conv: Conversation, turns: int, max_tokens: int = 16, think: float = 0.0) -> list[Turn]:
    """`think`: the most seconds a user waits before each turn (uniform, seeded by the conversation)."""
    rng = np.random.default_rng(conv.seed)
    # A connection a turn: llama-server closes a kept-alive connection after a streamed answer, and a reused one
    # then fails mid-write (both sides pay the same loopback connect, a fraction of a millisecond).
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=900), connector=connector) as session:
        out = []
        for _ in range(turns):
            if think:
                await asyncio.sleep(rng.uniform(0, think))
            t = await turn(session, url, conv.ask(), max_tokens)
            conv.answer(t.text)
            out.append(t)
        return out


def ours(model: Path, port: int, *extra: str, ctx: int = 4096, seqs: int = 2) -> list[str]:
    return serve_argv(model, port, "--max-queue", "64", "--model-name", "m", *extra, ctx=ctx, seqs=seqs)


# -- multi-turn TTFT, ours vs llama-server ------------------------------------------------------------------


def multi_turn(quick: bool = False) -> list[Row]:
    if llama_server.binary() is None:
        return []
    model = qwen2_330m()
    conversations = 1 if quick else 3
    port, their_port = free_port(), free_port()
    ratios: dict[str, list[float]] = {"ours": [], "theirs": []}
    firsts: dict[str, list[float]] = {"ours": [], "theirs": []}
    laters: dict[str, list[float]] = {"ours": [], "theirs": []}
    with (
        server(ours(model, port), port) as mine,
        llama_server.running(
            model, their_port, parallel=2, ctx_per_seq=4096, threads=THREADS, log=CACHE / "llama-server-multi-turn.log"
        ) as theirs,
    ):
        for c in range(conversations):  # the same conversation on both, interleaved
            for side, url in (("ours", mine), ("theirs", theirs)):
                turns = asyncio.run(converse(url, Conversation(seed=c, system_chars=1700), 6))
                first, later = turns[0].ttft, statistics.mean(t.ttft for t in turns[1:])
                firsts[side].append(first)
                laters[side].append(later)
                ratios[side].append(later / first)
                print(
                    f"multi-turn {side}: turn 1 {first * 1000:.0f} ms, turns 2-6 "
                    f"{', '.join(f'{t.ttft * 1000:.0f}' for t in turns[1:])} ms",
                    flush=True,
                )
    med = {side: statistics.median(r) for side, r in ratios.items()}
    first_ms = {side: statistics.median(v) * 1000 for side, v in firsts.items()}
    later_ms = {side: statistics.median(v) * 1000 for side, v in laters.items()}
    return [
        Row(
            "cache",
            f"multi-turn: turn 1 first token, ours (llama-server {first_ms['theirs']:.0f} ms)",
            first_ms["ours"],
            "ms",
            first_ms["ours"] / first_ms["theirs"],
            "",
            None,
        ),
        Row(
            "cache",
            f"multi-turn: turns 2-6 mean first token, ours (llama-server {later_ms['theirs']:.0f} ms)",
            later_ms["ours"],
            "ms",
            later_ms["ours"] / later_ms["theirs"],
            "",
            None,
        ),
        Row(
            "cache",
            f"multi-turn: turns 2-6 / turn 1 first token, ours vs llama-server's ({med['theirs']:.3f})",
            med["ours"],
            "x",
            med["ours"] / med["theirs"],
            "<= 1.0 x",
            med["ours"] <= med["theirs"],
        ),
    ]


# -- 16 conversations over 4 sequences ----------------------------------------------------------------------


def sixteen(quick: bool = False) -> list[Row]:
    """Baseline: the same conversations one at a time (nothing takes a conversation's sequence between turns)."""
    model = smollm_135m_q4()
    turns = 2 if quick else 3
    runs = (
        ("host RAM cache on", (), True),
        ("host RAM cache off", ("--cache-ram", "0"), True),
        ("one conversation at a time", ("--cache-ram", "0"), False),
    )
    rates = {}
    for label, extra, interleave in runs:
        port = free_port()
        with server(ours(model, port, *extra, ctx=2048, seqs=4), port) as url:
            rates[label] = asyncio.run(_sixteen(url, turns, interleave))
        print(f"sixteen, {label}: {rates[label]:.3f} of later turns' prompt tokens cached", flush=True)
    base = rates["one conversation at a time"]
    on, off = rates["host RAM cache on"], rates["host RAM cache off"]
    return [
        Row(
            "cache",
            f"16 conversations over 4 sequences, turns 2-{turns}: prompt tokens cached, host RAM cache on "
            f"(vs one conversation at a time: {base:.3f})",
            on,
            "share",
            on / base,
            ">= 0.95 x",
            on >= 0.95 * base,
        ),
        Row(
            "cache",
            f"16 conversations over 4 sequences, turns 2-{turns}: the same, host RAM cache off",
            off,
            "share",
            off / base,
            "",
            None,
        ),
    ]


async def _sixteen(url: str, turns: int, interleave: bool) -> float:
    convs = [Conversation(seed=100 + c, system_chars=500) for c in range(16)]
    order = (
        [(k, conv) for k in range(turns) for conv in convs]
        if interleave
        else [(k, conv) for conv in convs for k in range(turns)]
    )
    prompt = cached = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=900)) as session:
        for k, conv in order:  # interleaved: 15 other conversations come between two turns of one
            t = await turn(session, url, conv.ask())
            conv.answer(t.text)
            if k:
                prompt, cached = prompt + t.prompt_tokens, cached + t.cached_tokens
    return cached / prompt


# -- router strategies --------------------------------------------------------------------------------------


STRATEGIES = ("prefix", "least_connections", "round_robin")


def router(quick: bool = False) -> list[Row]:
    """Per strategy: the issue's hit rate (cached / prompt tokens), and the share of the reusable tokens served from
    a cache (the reusable part of a turn being the previous turn's prompt, which every later turn repeats)."""
    model = smollm_135m_q4()
    turns = 4 if quick else 6
    figures = {s: _routed(model, s, turns) for s in STRATEGIES}
    rate = {s: f[0] for s, f in figures.items()}
    reuse = {s: f[1] for s, f in figures.items()}
    best_other = max(rate["least_connections"], rate["round_robin"])
    where = f"router, 2 replicas, 8 conversations x {turns} turns"
    rows = [
        Row(
            "cache",
            f"{where}: cache-hit rate, prefix (ratio: vs the best other)",
            rate["prefix"],
            "share",
            rate["prefix"] / best_other,
            "> 1.0 x",
            rate["prefix"] > best_other,
        )
    ]
    rows += [
        Row(
            "cache",
            f"{where}: cache-hit rate, {s} (ratio: vs prefix)",
            rate[s],
            "share",
            rate[s] / rate["prefix"],
            "",
            None,
        )
        for s in STRATEGIES[1:]
    ]
    rows += [
        Row(
            "cache",
            f"{where}: reusable tokens served from a cache, {s}",
            reuse[s],
            "share",
            None,
            ">= 0.95" if s == "prefix" else "",
            reuse[s] >= 0.95 if s == "prefix" else None,
        )
        for s in STRATEGIES
    ]
    return rows


def _routed(model: Path, strategy: str, turns: int) -> tuple[float, float]:
    state = Path(tempfile.mkdtemp()) / "router.json"
    route_url = f"http://127.0.0.1:{free_port()}"
    with ExitStack() as stack:
        backends = []
        for _ in range(2):
            port = free_port()
            backends.append(stack.enter_context(server(ours(model, port, ctx=4096, seqs=4), port)))
        stack.enter_context(_router(route_url, strategy, state))
        for name, url in zip("ab", backends, strict=True):
            _register(route_url, name, url)
        rate, reuse = asyncio.run(_conversations(route_url, turns))
    print(f"router {strategy}: {rate:.3f} of prompt tokens cached, {reuse:.3f} of the reusable ones", flush=True)
    return rate, reuse


@contextmanager
def _router(url: str, strategy: str, state: Path) -> Iterator[None]:
    port = url.rsplit(":", 1)[1]
    with ServerProcess.module(
        "route",
        "--port",
        port,
        "--strategy",
        strategy,
        "--state-file",
        str(state),
        "--open-admin",
        ready_url=url + "/health",
        ready_status=None,
    ):
        yield


def _register(router_url: str, name: str, backend: str) -> None:
    import httpx

    reply = httpx.post(router_url + "/backends/register", json={"name": name, "url": backend, "models": ["m"]})
    reply.raise_for_status()


async def _conversations(url: str, turns: int) -> tuple[float, float]:
    """8 users at once, each with their own system prompt, messages of ~300 characters (pasted text: what a state
    from two turns back lacks is more than a few words) and a think time of up to a second before each turn."""
    convs = [Conversation(seed=200 + c, system_chars=300 + 60 * c, question_chars=300) for c in range(8)]
    results = await asyncio.gather(*(converse(url, conv, turns, think=1.0) for conv in convs))
    prompt = sum(t.prompt_tokens for r in results for t in r)
    cached = sum(t.cached_tokens for r in results for t in r)
    later = sum(t.cached_tokens for r in results for t in r[1:])
    reusable = sum(before.prompt_tokens for r in results for before in r[:-1])
    return cached / prompt, min(later, reusable) / reusable


# -- the full-size SWA cache's memory -----------------------------------------------------------------------


@dataclass
class KvSize:
    mib: float = 0.0
    lines: list[str] = field(default_factory=list)


def swa(quick: bool = False) -> list[Row]:
    rows = []
    for label, path in (("gemma-3-1b", _gemma3_1b_shaped()), ("gpt-oss-20b", _gpt_oss_20b_shaped())):
        small, full = _kv_mib(path, swa_full=False), _kv_mib(path, swa_full=True)
        print(f"swa {label}: KV {small:.1f} MiB, full-size SWA {full:.1f} MiB", flush=True)
        rows.append(
            Row(
                "cache",
                f"{label}-shaped: KV memory with --swa-full (without: {small:.0f} MiB), 2 x 4,096 tokens",
                full,
                "MiB",
                full / small,
                "",
                None,
            )
        )
    return rows


def _kv_mib(path: Path, swa_full: bool) -> float:
    """Sum of llama.cpp's own KV cache sizes for a serve-default context (2 sequences x 4,096 tokens)."""
    import ctypes

    import llama_cpp as ll

    from serve.engine.engine import Engine, Model, restore_log

    lines: list[str] = []

    @ll.llama_log_callback
    def capture(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        lines.append(text.decode("utf-8", "replace"))

    model = Model(path)
    ll.llama_log_set(capture, ctypes.c_void_p())
    try:
        engine = Engine(model, n_seq=2, ctx_per_seq=4096, threads=1, swa_full=swa_full)
        engine.stop()
    finally:
        model.close()
        restore_log()  # `capture` dies with this frame: the next log line would jump into freed memory
    sizes = [float(m.group(1)) for line in lines if (m := re.search(r"llama_kv_cache: size = +([\d.]+) MiB", line))]
    if not sizes:
        raise RuntimeError("llama.cpp logged no KV cache size")
    return sum(sizes)


def _gemma3_1b_shaped() -> Path:
    """A gemma3 checkpoint with gemma-3-1b's attention (26 layers, 5 sliding of 512 then 1 full, 1 kv head of
    256) and tiny everything else, converted by our converter."""
    import dataclasses

    from testkit.fixtures import build

    layer_types = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(26)]
    config = {
        **build.FAMILIES["gemma3"].config,
        "num_hidden_layers": 26,
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "head_dim": 256,
        "query_pre_attn_scalar": 256,
        "sliding_window": 512,
        "layer_types": layer_types,
        "max_position_embeddings": 32768,
    }
    return _converted(
        "gemma-3-1b-shaped",
        lambda folder: build._build(dataclasses.replace(build.FAMILIES["gemma3"], config=config), folder),
    )


def _gpt_oss_20b_shaped() -> Path:
    """gpt-oss-20b's attention (24 layers alternating sliding 128 / full, 64 query heads over 8 kv heads of 64),
    tiny everything else."""
    from testkit.fixtures import gpt_oss

    config = {
        **gpt_oss.CONFIG,
        "num_hidden_layers": 24,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "sliding_window": 128,
    }

    def build(folder: Path) -> None:
        saved = dict(gpt_oss.CONFIG)
        gpt_oss.CONFIG.update(config)
        try:
            gpt_oss._build(folder, gpt_oss._corpus())
        finally:
            gpt_oss.CONFIG.clear()
            gpt_oss.CONFIG.update(saved)

    return _converted("gpt-oss-20b-shaped", build)


def _converted(name: str, build) -> Path:  # type: ignore[no-untyped-def]
    from convert import convert_checkpoint

    out = CACHE / f"{name}.gguf"
    if out.exists():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        folder = Path(tmp) / name
        folder.mkdir()
        build(folder)
        convert_checkpoint(folder, out, progress=False)
    return out


# -- all of it ------------------------------------------------------------------------------------------------

PARTS = {"swa": swa, "sixteen": sixteen, "router": router, "multi_turn": multi_turn}


def run(quick: bool = False, only: tuple[str, ...] = ()) -> list[Row]:
    rows: list[Row] = []
    for name, part in PARTS.items():
        if not only or name in only:
            rows += part(quick)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.cache", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("parts", nargs="*", metavar="PART", help=f"parts to run: {', '.join(PARTS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="fewer conversations and turns")
    args = parser.parse_args(argv)
    from bench.common import table

    print(table(run(args.quick, tuple(args.parts))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
