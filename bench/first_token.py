"""Where a request's time to first token goes, ours against llama-server's, on the same GGUF in the same run.

Ours runs as a real server process with a timeline recorded for every generation request (`--timeline`: the
app's own functions wrapped, nothing else changed): when the request reaches the app, when it is admitted (body
read, validated, tokenized, handed to the decode thread), when the first decode step that holds it begins and ends
(llama_decode and the first token's sampling), when that step's events reach the event loop, and when the token's
bytes are handed to the socket. The client's send and first-token times share the clock (CLOCK_MONOTONIC).

llama-server reports its own prompt time (`timings.prompt_ms`) in a stream's last chunk, so for both servers the
first token splits into the decode step and everything outside it. One stream: sequential requests, in blocks
alternating between the two servers. Eight streams: the bench's eight concurrent clients (bench/streams.py), rounds
alternating the same way. Both use the bench's prompt, cached after the first request, as `bench.serve` does.

    python -m bench.first_token [--model q4|q8] [--requests 200] [--rounds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import contextvars
import json
import os
import re
import socket
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import llama_server
from bench.common import Row
from bench.models import CACHE, qwen2_330m, smollm_135m_q4
from bench.streams import PROMPT, THREADS, serve_argv, server
from hearth_common.procs import free_port

BLOCK = 20  # sequential requests to one server before the other's turn
TEXT = re.compile(rb'"text": ?"[^"]')  # a chunk with text (ours writes JSON with spaces, llama-server without)


# -- the server side: a timeline per generation request -------------------------------------------------------------


def install_timeline(out: Path) -> None:
    """Wrap the serve app's own functions so that each generation request records its timeline; written to `out`
    as JSON when the process exits."""
    from serve import arrivals, runtime
    from serve.engine import engine

    records: list[dict[str, Any]] = []
    current: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("timeline", default=None)
    clock = time.perf_counter

    real_call = arrivals.CountArrivals.__call__

    async def call(self: Any, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await real_call(self, scope, receive, send)
            return
        record: dict[str, Any] = {"arrive": clock(), "bodies": []}
        records.append(record)
        current.set(record)

        async def sending(message: Any) -> None:
            if message["type"] == "http.response.body":
                record["bodies"].append(clock())  # handed to the server, which writes it to the socket
            await send(message)

        await real_call(self, scope, receive, sending)

    real_start = runtime.Runtime.start

    def start(self: Any, prompt: list[int], *args: Any) -> Any:
        run = real_start(self, prompt, *args)
        record = current.get()
        if record is not None:
            record["admitted"] = clock()
            setattr(run.job, "timeline", record)  # noqa: B010 (a Job has no such field)
        return run

    real_step = engine.Engine._step

    def step(self: Any) -> None:
        began = clock()
        real_step(self)
        ended = clock()
        for slot in self._slots:
            record = getattr(slot.job, "timeline", None)
            if record is not None and "step" not in record:
                record["step"] = (began, ended)

    real_deliver = runtime._deliver_all

    def deliver(events: list[tuple[Any, Any]]) -> None:
        now = clock()
        for job, _ in events:
            record = getattr(job, "timeline", None)
            if record is not None:
                record.setdefault("delivered", now)
        real_deliver(events)

    setattr(arrivals.CountArrivals, "__call__", call)  # noqa: B010 (mypy refuses assignment to a method)
    setattr(runtime.Runtime, "start", start)  # noqa: B010
    setattr(engine.Engine, "_step", step)  # noqa: B010
    setattr(runtime, "_deliver_all", deliver)  # noqa: B010

    def write() -> None:
        out.write_text(json.dumps([r for r in records if "step" in r and "delivered" in r]))

    atexit.register(write)


def serve_with_timeline(argv: list[str]) -> int:
    """`python -m bench.first_token --timeline FILE SERVE-ARGS...`: the model server, timeline recorded."""
    from serve.__main__ import main as serve_main

    install_timeline(Path(argv[0]))
    return serve_main(argv[1:])


# -- the client side ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    sent: float
    first: float  # the first chunk with text
    prompt_ms: float | None  # llama-server's timings: its prompt's decode


def _request(port: int, max_tokens: int) -> bytes:
    body = json.dumps({"prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0, "stream": True}).encode()
    head = f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
    return (head + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


def one(port: int) -> Sent:
    """One streamed completion of one token on a new connection (as the bench's clients make)."""
    request = _request(port, 1)
    sent = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(request)
        data, first = b"", None
        while chunk := sock.recv(65536):
            data += chunk
            if first is None and TEXT.search(data):
                first = time.perf_counter()
    timings = [json.loads(line[6:]).get("timings") for line in data.split(b"\n") if line.startswith(b"data: {")]
    prompt_ms = next((t["prompt_ms"] + t.get("predicted_ms", 0.0) for t in timings if t), None)
    assert first is not None, data[-300:]
    return Sent(sent, first, prompt_ms)


async def _concurrent(port: int, streams: int) -> list[Sent]:
    async def stream() -> Sent:
        sent = time.perf_counter()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_request(port, 16))
        data, first = b"", None
        while chunk := await reader.read(65536):
            data += chunk
            if first is None and TEXT.search(data):
                first = time.perf_counter()
        writer.close()
        assert first is not None, data[-300:]
        return Sent(sent, first, None)

    return list(await asyncio.gather(*(stream() for _ in range(streams))))


def concurrent(port: int, streams: int) -> list[Sent]:
    return asyncio.run(_concurrent(port, streams))


# -- the run --------------------------------------------------------------------------------------------------------


def _median(values: list[float]) -> float:
    return statistics.median(values) * 1000


@contextlib.contextmanager
def _servers(model: Path, timeline: Path) -> Iterator[tuple[int, int]]:
    ours, theirs = free_port(), free_port()
    argv = ["-m", "bench.first_token", "--timeline", str(timeline), *serve_argv(model, ours)[2:]]
    with (
        server(argv, ours),
        llama_server.running(
            model, theirs, parallel=8, ctx_per_seq=1024, threads=THREADS, log=CACHE / f"llama-server-{theirs}.log"
        ),
    ):
        yield ours, theirs


def run(model: str = "q4", requests: int = 200, rounds: int = 20) -> list[Row]:
    if llama_server.binary() is None:
        return []
    path = qwen2_330m() if model == "q8" else smollm_135m_q4()
    label = "330M q8_0" if model == "q8" else "135M Q4_0"
    timeline = CACHE / f"first-token-{os.getpid()}.json"
    single: dict[int, list[Sent]] = {}
    rounds_of: dict[int, list[list[Sent]]] = {}
    with _servers(path, timeline) as (ours, theirs):
        for port in (ours, theirs):
            for _ in range(5):
                one(port)  # the prompt cached, the threads warm
        for _ in range(max(1, requests // BLOCK)):
            for port in (ours, theirs):
                single.setdefault(port, []).extend(one(port) for _ in range(BLOCK))
        for _ in range(rounds):
            for port in (ours, theirs):
                one(port)  # as the bench's clients warm up before each run
                rounds_of.setdefault(port, []).append(concurrent(port, 8))
                time.sleep(0.05)
    records = json.loads(timeline.read_text())
    timeline.unlink()
    return _rows(label, single[ours], single[theirs], rounds_of[ours], rounds_of[theirs], records)


def _rows(
    label: str,
    ours: list[Sent],
    theirs: list[Sent],
    ours8: list[list[Sent]],
    theirs8: list[list[Sent]],
    records: list[dict[str, Any]],
) -> list[Row]:
    by_arrival = sorted(records, key=lambda r: r["arrive"])

    def record_of(sent: Sent) -> dict[str, Any]:
        return next(r for r in by_arrival if r["arrive"] >= sent.sent)

    timed = [(s, record_of(s)) for s in ours]
    stages = {
        "client send -> the app": [r["arrive"] - s.sent for s, r in timed],
        "the app -> admitted (read, validate, tokenize, hand over)": [r["admitted"] - r["arrive"] for s, r in timed],
        "admitted -> the decode step begins": [r["step"][0] - r["admitted"] for s, r in timed],
        "the step (llama_decode, first token sampled)": [r["step"][1] - r["step"][0] for s, r in timed],
        "step end -> the event loop has it": [r["delivered"] - r["step"][1] for s, r in timed],
        "the event loop -> bytes to the socket": [
            next(b for b in r["bodies"] if b >= r["delivered"]) - r["delivered"] for s, r in timed
        ],
        "bytes to the socket -> client": [
            s.first - next(b for b in r["bodies"] if b >= r["delivered"]) for s, r in timed
        ],
    }
    ttft, their_ttft = _median([s.first - s.sent for s in ours]), _median([s.first - s.sent for s in theirs])
    outside = _median([(s.first - s.sent) - (r["step"][1] - r["step"][0]) for s, r in timed])
    their_outside = statistics.median((s.first - s.sent) * 1000 - (s.prompt_ms or 0.0) for s in theirs)
    for name, values in stages.items():
        print(f"{label}, 1 stream, ours: {name}: median {_median(values):.3f} ms", flush=True)

    def mean8(runs: list[list[Sent]]) -> float:
        return _median([statistics.mean(s.first - s.sent for s in run) for run in runs])

    gathered = []
    for run in ours8:
        start = min(s.sent for s in run)
        held = [r for r in by_arrival if start <= r["arrive"] <= max(s.first for s in run)]
        if len(held) == len(run):
            gathered.append(
                (
                    max(r["arrive"] for r in held) - start,
                    max(r["admitted"] for r in held) - start,
                    min((r["step"] for r in held), key=lambda s: s[0]),
                )
            )
    last_arrival = _median([g[0] for g in gathered])
    last_admitted = _median([g[1] for g in gathered])
    step = _median([g[2][1] - g[2][0] for g in gathered])
    print(
        f"{label}, 8 streams, ours: last request reaches the app {last_arrival:.2f} ms after the first send, is "
        f"admitted at {last_admitted:.2f} ms; the first step takes {step:.2f} ms",
        flush=True,
    )
    return [
        Row("serve", f"first token, {label}, 1 stream: median, ours vs llama-server ({their_ttft:.2f} ms)", ttft,
            "ms", ttft / their_ttft, "", None),
        Row("serve", f"first token, {label}, 1 stream: outside the decode step, ours vs llama-server "
            f"({their_outside:.2f} ms)", outside, "ms", outside / their_outside, "", None),
        *(Row("serve", f"first token, {label}, 1 stream, ours: {name}", _median(values), "ms", None, "", None)
          for name, values in stages.items()),
        Row("serve", f"first token, {label}, 8 streams: median of the rounds' means, ours vs llama-server "
            f"({mean8(theirs8):.2f} ms)", mean8(ours8), "ms", mean8(ours8) / mean8(theirs8), "", None),
        Row("serve", f"first token, {label}, 8 streams, ours: the last request admitted after the first send "
            f"(it reached the app at {last_arrival:.2f} ms)", last_admitted, "ms", None, "", None),
        Row("serve", f"first token, {label}, 8 streams, ours: the first step (8 sequences)", step, "ms", None, "",
            None),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--timeline"]:
        return serve_with_timeline(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m bench.first_token", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=("q8", "q4"), default="q4")
    parser.add_argument("--requests", type=int, default=200, help="sequential requests to each server")
    parser.add_argument("--rounds", type=int, default=20, help="rounds of 8 concurrent streams on each server")
    args = parser.parse_args(argv)
    from bench.common import table

    print(table(run(args.model, args.requests, args.rounds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
