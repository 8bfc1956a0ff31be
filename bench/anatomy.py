"""Where a decode step's time goes between llama_decode returning and the bytes leaving, at 8 streams.

Engine side (in this process, the engine's own methods timed): llama_decode's wall time per step, and the decode
thread's CPU time (time.thread_time: what it computes, not what it waits for) in sampling, in turning tokens into
text and events (pieces, UTF-8, stop strings, the hand-off), and in building the next batch. Request side (a real
server process): the event loop thread's CPU time per streamed token (the asyncio hop, SSE chunk, JSON, hypercorn).
CPU times hold on a busy machine; the decode's wall time does not.

    python -m bench.anatomy [--model q8|q4] [--streams 8]
"""

from __future__ import annotations

import argparse
import os
import queue
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import Row
from bench.models import qwen2_330m, smollm_135m_q4
from bench.streams import PROMPT, THREADS, clients, serve_argv, server
from hearth_common.procs import free_port

TOKENS = 64


def _patch(ll: Any, engine: type, decode: Any, step: Any, sample: Any) -> None:
    """Swap in (or back) the timed llama_decode and the engine's step and sampling: the engine calls them through
    the module and the class at run time."""
    setattr(ll, "llama_decode", decode)  # noqa: B010 (mypy refuses plain assignment to a module function or method)
    setattr(engine, "_step", step)  # noqa: B010
    setattr(engine, "_sample", sample)  # noqa: B010


def engine_side(model_path: Path, streams: int) -> dict[str, float]:
    """Per step: decode wall ms; per token: decode-thread CPU µs by part."""
    import llama_cpp as ll

    import serve.engine.engine as E

    spent = {"decode_wall": 0.0, "steps": 0, "sample": 0.0, "step_cpu": 0.0, "decode_cpu": 0.0}
    real_decode, real_step, real_sample = ll.llama_decode, E.Engine._step, E.Engine._sample

    def decode(ctx, batch):  # type: ignore[no-untyped-def]
        t, c = time.perf_counter(), time.thread_time()
        rc = real_decode(ctx, batch)
        spent["decode_wall"] += time.perf_counter() - t
        spent["decode_cpu"] += time.thread_time() - c
        spent["steps"] += 1
        return rc

    def step(self):  # type: ignore[no-untyped-def]
        c = time.thread_time()
        real_step(self)
        spent["step_cpu"] += time.thread_time() - c

    def sample(self, slot):  # type: ignore[no-untyped-def]
        c = time.thread_time()
        real_sample(self, slot)
        spent["sample"] += time.thread_time() - c

    _patch(ll, E.Engine, decode, step, sample)
    try:
        model = E.Model(model_path)
        engine = E.Engine(model, 8, 1024, threads=THREADS)
        engine.start()

        def go(tokens: int) -> None:
            queues = []
            for _ in range(streams):
                q: queue.Queue = queue.Queue()
                engine.submit(
                    E.Job(model.tokenize(PROMPT, False), E.SamplingParams(max_tokens=tokens, temperature=0.0), q.put)
                )
                queues.append(q)
            for q in queues:
                while not isinstance(q.get(), E.Finished):
                    pass

        go(4)
        for k in spent:
            spent[k] = 0
        go(TOKENS)
        engine.stop()
        model.close()
    finally:
        _patch(ll, E.Engine, real_decode, real_step, real_sample)
    tokens = streams * TOKENS
    steps = spent["steps"]
    python_step = spent["step_cpu"] - spent["decode_cpu"]  # _step's own CPU minus what llama_decode used
    return {
        "decode_wall_ms": 1000 * spent["decode_wall"] / steps,
        "sample_us": 1e6 * spent["sample"] / tokens,
        "batch_us": 1e6 * (python_step - spent["sample"]) / tokens,
    }


def loop_side(model_path: Path, streams: int) -> float:
    """The server's event loop thread: CPU µs per streamed token."""
    port = free_port()
    argv = serve_argv(model_path, port)
    with server(argv, port) as url:
        pid = next(
            int(p)
            for p in os.listdir("/proc")
            if p.isdigit()
            and _cmdline(p).endswith(f"--port {port} --threads {THREADS} --max-concurrent 8 --ctx-size 1024")
        )
        clients(url, streams, 4)
        before = _thread_cpu(pid)
        run = clients(url, streams, TOKENS)
        return 1e6 * (_thread_cpu(pid) - before) / max(run.tokens, 1)


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ").strip()
    except OSError:
        return ""


def _thread_cpu(pid: int) -> float:
    """CPU seconds of the process's main thread (the asyncio loop): schedstat's time on a CPU, in nanoseconds
    (stat's utime and stime count clock ticks of 10 ms, coarse for a run of a few hundred tokens)."""
    return int(Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()[0]) / 1e9


def run(model: str = "q8", streams: int = 8) -> list[Row]:
    path = qwen2_330m() if model == "q8" else smollm_135m_q4()
    e = engine_side(path, streams)
    loop_us = loop_side(path, streams)
    per_step_python = (e["sample_us"] + e["batch_us"]) * streams / 1000
    label = f"{'330M q8_0' if model == 'q8' else '135M Q4_0'}, {streams} streams"
    print(
        f"anatomy {label}: decode {e['decode_wall_ms']:.1f} ms a step; per token: sampling {e['sample_us']:.0f} us, "
        f"batch building and hand-off {e['batch_us']:.0f} us (decode thread CPU), event loop {loop_us:.0f} us CPU",
        flush=True,
    )
    return [
        Row(
            "serve",
            f"anatomy, {label}: decode thread Python a step (sampling {e['sample_us']:.0f} + batch "
            f"{e['batch_us']:.0f} us a token) vs llama_decode ({e['decode_wall_ms']:.1f} ms)",
            per_step_python,
            "ms",
            per_step_python / e["decode_wall_ms"],
            "",
            None,
        ),
        Row(
            "serve",
            f"anatomy, {label}: event loop CPU a step ({loop_us:.0f} us a token: hop, SSE, JSON, HTTP) vs llama_decode",
            loop_us * streams / 1000,
            "ms",
            loop_us * streams / 1000 / e["decode_wall_ms"],
            "",
            None,
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.anatomy", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=("q8", "q4"), default="q8")
    parser.add_argument("--streams", type=int, default=8)
    args = parser.parse_args(argv)
    from bench.common import table

    print(table(run(args.model, args.streams)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
