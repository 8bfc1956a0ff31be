"""End to end: aggregate tokens/s through the router over two model servers vs the same two servers hit directly.

One run starts the stack (`python -m stack`) with demo-think and demo-harmony (the random tiny fixtures when the
demo checkpoints are not built), then drives 8 streaming clients, 4 a model, for a few seconds each way,
alternating direct and routed twice so that drift on the shared cores hits both alike. Tokens are the servers' own
usage counts (stream_options.include_usage). Run: python -m bench.e2e
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.common import Row

ROOT = Path(__file__).resolve().parents[1]
SECONDS = 6.0
STREAMS_PER_MODEL = 4
GOAL = 0.9  # the router may cost at most a tenth of the throughput


def sources() -> tuple[dict[str, Path], str]:
    demo = ROOT / "models" / "demo"
    if all((demo / n / "config.json").is_file() for n in ("demo-think", "demo-harmony")):
        return {"demo-think": demo / "demo-think", "demo-harmony": demo / "demo-harmony"}, "demo models"
    from testkit.fixtures.build import build_fixture

    return {"demo-think": build_fixture("qwen3"), "demo-harmony": build_fixture("llama")}, "random fixtures"


def stack_file(models: dict[str, Path]) -> str:
    lines = ["[router]", "port = 0", ""]
    for name, source in models.items():
        lines += [
            "[[models]]",
            f'name = "{name}"',
            f'source = "{source}"',
            "ctx_size = 1024",
            f"max_concurrent = {STREAMS_PER_MODEL}",
            "max_queue = 64",
            "threads = 1",
            "",
        ]
    return "\n".join(lines)


async def one_stream(session: aiohttp.ClientSession, url: str, model: str, question: str) -> int:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": question}],
        "temperature": 0,
        "max_tokens": 128,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    tokens = 0
    async with session.post(url + "/chat/completions", json=body) as resp:
        resp.raise_for_status()
        async for raw in resp.content:
            line = raw.decode().strip()
            if line.startswith("data: {"):
                usage = json.loads(line[6:]).get("usage")
                if usage:
                    tokens = usage["completion_tokens"]
    return tokens


async def load(targets: list[tuple[str, str]], questions: list[str], headers: dict[str, str] | None = None) -> float:
    """Aggregate completion tokens/s of one client loop per (base URL, model) for SECONDS."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120), headers=headers) as session:
        stop = time.monotonic() + SECONDS
        start = time.monotonic()

        async def client(i: int, url: str, model: str) -> int:
            total = 0
            while time.monotonic() < stop:
                total += await one_stream(session, url, model, questions[i % len(questions)])
                i += 7
            return total

        totals = await asyncio.gather(*(client(i, u, m) for i, (u, m) in enumerate(targets)))
        return sum(totals) / (time.monotonic() - start)


def run() -> list[Row]:
    from testkit.stack import StackProcess

    try:
        from models.demo.data import ITEMS

        questions = [item.question for item in ITEMS]
    except ImportError:
        questions = ["What is the capital of France?"]
    models, what = sources()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stack.toml"
        path.write_text(stack_file(models))
        stack = StackProcess([str(path)], Path(tmp) / "state")
        try:
            servers = {s["name"]: s["url"] + "/v1" for s in stack.state()["servers"]}
            direct_targets = [(servers[m], m) for m in models for _ in range(STREAMS_PER_MODEL)]
            routed_targets = [(stack.api, m) for m in models for _ in range(STREAMS_PER_MODEL)]
            # the model servers take the stack's backend key (only the router talks to them otherwise)
            asyncio.run(load(direct_targets[:2], questions, stack.backend_auth))  # warm-up: prompts, connection pools
            direct, routed = [], []
            for _ in range(2):
                direct.append(asyncio.run(load(direct_targets, questions, stack.backend_auth)))
                routed.append(asyncio.run(load(routed_targets, questions)))
        finally:
            stack.stop()
    d, r = sum(direct) / len(direct), sum(routed) / len(routed)
    streams = STREAMS_PER_MODEL * len(models)
    return [
        Row("e2e", f"aggregate tok/s, 2 servers hit directly, {streams} streams ({what})", d, "tok/s", None, "", None),
        Row(
            "e2e",
            f"aggregate tok/s through the router, {streams} streams, vs direct",
            r,
            "tok/s",
            r / d,
            f">= {GOAL} x",
            r / d >= GOAL,
        ),
    ]


if __name__ == "__main__":
    for row in run():
        print(row.markdown())
