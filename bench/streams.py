"""What the serving benchmarks share: the model they run, our server's arguments, a server process that is
ready, and concurrent streaming clients with their aggregate figures (bench/serve.py, anatomy.py, cache.py and
ondemand.py all use them; none of them imports another benchmark).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.models import qwen2_330m
from hearth_common.procs import CODE_ROOT, child_env
from testkit.procs import ServerProcess

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "serve" / "bench"
THREADS = int(os.environ.get("HEARTH_BENCH_THREADS", "2"))  # the figures are for 2 threads
PROMPT = "The history of the city begins with a small settlement by the river, where"


def build_model() -> Path:
    """The synthetic ~315M-parameter qwen2-shaped q8_0 GGUF (bench/models.py)."""
    return qwen2_330m()


@dataclass(frozen=True)
class Run:
    tokens: int
    seconds: float
    ttft: float  # mean time to first token
    cut: int  # streams that ended before max_tokens


def best(runs: list[Run]) -> Run:
    """The least disturbed of repeated runs (this machine is shared): highest rate, its own first-token time."""
    return max(runs, key=lambda r: r.tokens / r.seconds)


def serve_argv(model: Path, port: int, *extra: str, ctx: int = 1024, seqs: int = 8) -> list[str]:
    """Our server's arguments after the interpreter: `seqs` sequences of `ctx` tokens, the benchmark's threads."""
    return [
        "-m", "serve", "--model-path", str(model), "--port", str(port), "--threads", str(THREADS),
        "--max-concurrent", str(seqs), "--ctx-size", str(ctx), *extra,
    ]  # fmt: skip


@contextmanager
def server(argv: list[str], port: int) -> Iterator[str]:
    """`python ARGV` on `port` (ours, or llama-cpp-python's server), once it is ready: ours answers /health 200 once
    the model is loaded, llama_cpp.server has only /v1/models. Its log: .cache/serve/bench/server-PORT.log."""
    url = f"http://127.0.0.1:{port}"
    ready = "/v1/models" if "llama_cpp.server" in argv else "/health"
    with ServerProcess(
        [sys.executable, *argv],
        ready_url=url + ready,
        env=child_env(),
        cwd=CODE_ROOT,
        log=CACHE / f"server-{port}.log",
        ready_timeout=120,
        grace=20,
    ):
        yield url


async def _stream(session, url: str, n: int) -> tuple[int, float, float]:  # type: ignore[no-untyped-def]
    """One streaming completion: (tokens received, time to first token, end time)."""
    body = {"prompt": PROMPT, "max_tokens": n, "temperature": 0, "stream": True}
    t0 = time.perf_counter()
    first = None
    count = 0
    import aiohttp

    try:
        async with session.post(url + "/v1/completions", json=body) as response:
            async for line in response.content:
                if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("choices") and chunk["choices"][0].get("text"):
                    count += 1
                    first = first or time.perf_counter()
    except aiohttp.ClientPayloadError:
        pass  # the server cut the stream: counted as cut by the caller
    end = time.perf_counter()
    return count, (first or end) - t0, end


def clients(url: str, streams: int, n: int) -> Run:
    """`streams` concurrent streaming clients; aggregate tokens over wall time."""
    import aiohttp

    async def go() -> Run:
        timeout = aiohttp.ClientTimeout(total=600)
        async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(force_close=True)) as session:
            await _stream(session, url, 4)  # warm-up
            t0 = time.perf_counter()
            results = await asyncio.gather(*(_stream(session, url, n) for _ in range(streams)))
            end = max(r[2] for r in results)
            return Run(
                sum(r[0] for r in results),
                end - t0,
                statistics.mean(r[1] for r in results),
                sum(1 for r in results if r[0] < n * 0.9),
            )

    return asyncio.run(go())


# A conversation's text that only grows (the prompt-cache and disk-tier benchmarks: bench/cache.py, kvdisk.py)
WORDS = [
    "river",
    "market",
    "salt",
    "wool",
    "hills",
    "trader",
    "bridge",
    "winter",
    "harvest",
    "stone",
    "tower",
    "road",
    "lamp",
    "letter",
    "garden",
    "harbor",
    "mill",
    "forest",
    "cart",
    "bell",
]


def words(seed: int, chars: int) -> str:
    rng = np.random.default_rng(seed)
    out: list[str] = []
    while sum(len(w) + 1 for w in out) < chars:
        out.append(str(rng.choice(WORDS)))
    return " ".join(out)


@dataclass
class Conversation:
    """ChatML text that only grows: each turn resends the whole history."""

    seed: int
    system_chars: int
    question_chars: int = 60
    history: str = ""
    turns: int = 0

    def __post_init__(self) -> None:
        self.history = f"<|im_start|>system\n{words(self.seed, self.system_chars)}<|im_end|>\n"

    def ask(self) -> str:
        self.turns += 1
        question = words(self.seed * 100 + self.turns, self.question_chars)
        self.history += f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
        return self.history

    def answer(self, text: str) -> None:
        self.history += f"{text}<|im_end|>\n"
