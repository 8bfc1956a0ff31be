"""serve benchmark: decode throughput and time to first token through our server, against raw llama-cpp-python,
llama-cpp-python's own server and llama.cpp's C++ server (llama-server, built from the same llama.cpp), all
measured in this run on synthetic real-shaped models (bench/models.py: random weights; special tokens never
win greedy decoding, so every request generates exactly max_tokens).

Against llama-server: both servers up at once, 8 sequences each, the same threads and flash-attention setting;
1, 4 and 8 concurrent streams of 64 tokens, runs interleaved ours / theirs, the least disturbed of `repeats`
(highest aggregate tok/s: all tokens over the wall time from the first request to the last token; lowest mean
time to first token).

    python -m bench.serve [--quick] [--tokens 128] [--hypercorn]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

from bench import llama_server
from bench.common import Row
from bench.models import qwen2_330m, smollm_135m_q4
from bench.streams import CACHE, PROMPT, THREADS, Run, best, build_model, clients, serve_argv, server
from hearth_common.procs import free_port

# -- measurements ---------------------------------------------------------------------------------------------


def raw(llm, n: int) -> Run:  # type: ignore[no-untyped-def]
    """llama-cpp-python's high-level generation, one stream."""
    llm.reset()  # forget earlier tokens: its prefix cache would skip the prompt we time
    t0 = time.perf_counter()
    first = None
    count = 0
    for _ in llm.create_completion(PROMPT, max_tokens=n, temperature=0, stream=True):
        count += 1
        first = first or time.perf_counter()
    end = time.perf_counter()
    return Run(count, end - t0, (first or end) - t0, 0)


def overhead(tokens: int = 128, repeats: int = 3) -> list[Row]:
    """Ours against raw llama-cpp-python and llama-cpp-python's server."""
    from llama_cpp import Llama

    model = build_model()
    llm = Llama(str(model), n_ctx=1024, n_threads=THREADS, n_threads_batch=THREADS, verbose=False)
    llm.create_completion(PROMPT, max_tokens=4, temperature=0)  # warm-up
    port = free_port()
    ours_args = serve_argv(model, port)
    raws: list[Run] = []
    ones: list[Run] = []
    with server(ours_args, port) as url:
        clients(url, 1, 4)  # warm-up
        for _ in range(repeats):  # interleaved, so both see the same background load
            raws.append(raw(llm, tokens))
            ones.append(clients(url, 1, tokens))
        four = best([clients(url, 4, tokens) for _ in range(max(1, repeats - 1))])
        eight = best([clients(url, 8, tokens) for _ in range(max(1, repeats - 1))])
    del llm
    base, one = best(raws), best(ones)
    raw_tps = base.tokens / (base.seconds - base.ttft)
    one_tps = one.tokens / (one.seconds - one.ttft)
    agg4, agg8 = four.tokens / four.seconds, eight.tokens / eight.seconds
    raw_ttft, one_ttft = min(r.ttft for r in raws), min(r.ttft for r in ones)
    print(f"raw llama-cpp-python: {raw_tps:.1f} tok/s, first token {raw_ttft * 1000:.1f} ms", flush=True)
    print(
        f"ours: 1 stream {one_tps:.1f} tok/s (first token {one_ttft * 1000:.1f} ms), 4: {agg4:.1f}, 8: {agg8:.1f}",
        flush=True,
    )

    port = free_port()
    theirs_args = [
        "-m",
        "llama_cpp.server",
        "--model",
        str(model),
        "--port",
        str(port),
        "--n_threads",
        str(THREADS),
        "--n_threads_batch",
        str(THREADS),
        "--n_ctx",
        "1024",
    ]
    with server(theirs_args, port) as url:
        their_one = clients(url, 1, tokens)
        their_four = clients(url, 4, tokens)
    port = free_port()
    with server([*theirs_args[:5], str(port), *theirs_args[6:], "--interrupt_requests", "False"], port) as url:
        their_patient = clients(url, 4, tokens)  # its default cuts streams; this is its best case
    their_one_tps = their_one.tokens / (their_one.seconds - their_one.ttft)
    their_agg4 = their_four.tokens / their_four.seconds
    patient_agg4 = their_patient.tokens / their_patient.seconds
    print(
        f"llama_cpp.server: 1 client {their_one_tps:.1f} tok/s, 4 clients {their_agg4:.1f} tok/s aggregate, "
        f"{their_four.cut} of 4 streams cut, mean first token {their_four.ttft * 1000:.0f} ms; with interruption off "
        f"{patient_agg4:.1f} tok/s, mean first token {their_patient.ttft * 1000:.0f} ms",
        flush=True,
    )

    ttft_extra = (one_ttft - raw_ttft) * 1000
    return [
        Row("serve", "raw llama-cpp-python decode", raw_tps, "tok/s", None, "", None),
        Row(
            "serve", "single stream vs raw", one_tps, "tok/s", one_tps / raw_tps, ">= 0.97 x", one_tps / raw_tps >= 0.97
        ),
        Row(
            "serve",
            "time to first token minus raw's",
            ttft_extra,
            "ms",
            one_ttft / raw_ttft,
            "<= +5 ms",
            ttft_extra <= 5,
        ),
        Row("serve", "4 streams aggregate vs single", agg4, "tok/s", agg4 / one_tps, ">= 1.5 x", agg4 / one_tps >= 1.5),
        Row("serve", "8 streams aggregate vs single", agg8, "tok/s", agg8 / one_tps, ">= 2.1 x", agg8 / one_tps >= 2.1),
        Row(
            "serve",
            "ours, 4 and 8 streams: streams cut",
            four.cut + eight.cut,
            "streams",
            None,
            "0",
            four.cut + eight.cut == 0,
        ),
        Row("serve", "llama_cpp.server 1 client vs raw", their_one_tps, "tok/s", their_one_tps / raw_tps, "", None),
        Row(
            "serve",
            "4 clients: ours vs llama_cpp.server",
            agg4,
            "tok/s",
            agg4 / their_agg4,
            ">= 1.8 x",
            agg4 / their_agg4 >= 1.8,
        ),
        Row(
            "serve",
            "4 clients: ours vs llama_cpp.server, interruption off",
            agg4,
            "tok/s",
            agg4 / patient_agg4,
            ">= 1.8 x",
            agg4 / patient_agg4 >= 1.8,
        ),
        Row(
            "serve",
            "4 clients: mean first token, ours vs llama_cpp.server (interruption off)",
            four.ttft * 1000,
            "ms",
            four.ttft / their_patient.ttft,
            "",
            None,
        ),
        Row("serve", "llama_cpp.server 4 clients: streams cut", their_four.cut, "streams", None, "", None),
    ]


STREAMS = (1, 4, 8)


def versus_llama_server(
    model: Path, label: str, tokens: int = 64, repeats: int = 3, hypercorn: bool = False
) -> list[Row]:
    """Aggregate tok/s and mean first-token time, ours / llama-server's, at 1, 4 and 8 streams. `hypercorn`: ours
    on hypercorn too (`--server hypercorn`), a third side in the same interleaved rounds."""
    if llama_server.binary() is None:
        return []
    ours_port, their_port, hyper_port = free_port(), free_port(), free_port()
    runs: dict[tuple[str, int], list[Run]] = {}
    log = CACHE / f"llama-server-{their_port}.log"
    with contextlib.ExitStack() as stack:
        sides = {"ours": stack.enter_context(server(serve_argv(model, ours_port), ours_port))}
        if hypercorn:
            argv = serve_argv(model, hyper_port, "--server", "hypercorn")
            sides["hypercorn"] = stack.enter_context(server(argv, hyper_port))
        sides["theirs"] = stack.enter_context(
            llama_server.running(model, their_port, parallel=8, ctx_per_seq=1024, threads=THREADS, log=log)
        )
        for url in sides.values():
            clients(url, 8, 4)  # warm-up: every sequence once
        for streams in STREAMS:
            for _ in range(repeats):  # interleaved, so every side sees the same background load
                for side, url in sides.items():
                    runs.setdefault((side, streams), []).append(clients(url, streams, tokens))
    rows = []
    for streams in STREAMS:
        # The least disturbed run of each side (this machine is shared: a neighbour's burst only ever slows a run
        # down): the highest rate, and the lowest mean first-token time.
        rate = {side: max(r.tokens / r.seconds for r in runs[side, streams]) for side in sides}
        ttft = {side: min(r.ttft for r in runs[side, streams]) * 1000 for side in sides}
        cut = sum(r.cut for r in runs["ours", streams])
        plural = "s" * (streams > 1)
        hyper = f", ours on hypercorn {rate['hypercorn']:.1f} tok/s ({ttft['hypercorn']:.0f} ms)" if hypercorn else ""
        print(
            f"{label}, {streams} stream{plural}: ours {rate['ours']:.1f} tok/s (first token {ttft['ours']:.0f} ms), "
            f"llama-server {rate['theirs']:.1f} tok/s ({ttft['theirs']:.0f} ms){hyper}; ours cut {cut}",
            flush=True,
        )
        ratio = rate["ours"] / rate["theirs"]
        rows.append(
            Row(
                "serve",
                f"{label}, {streams} stream{plural}: aggregate tok/s vs llama-server ({rate['theirs']:.1f})",
                rate["ours"],
                "tok/s",
                ratio,
                ">= 1.0 x",
                ratio >= 1.0,
            )
        )
        t = ttft["ours"] / ttft["theirs"]
        goal = streams == 8
        rows.append(
            Row(
                "serve",
                f"{label}, {streams} stream{plural}: mean first token vs llama-server ({ttft['theirs']:.0f} ms)",
                ttft["ours"],
                "ms",
                t,
                "<= 1.0 x" if goal else "",
                (t <= 1.0) if goal else None,
            )
        )
        if hypercorn:
            rows.append(
                Row(
                    "serve",
                    f"{label}, {streams} stream{plural}: mean first token, ours on hypercorn vs llama-server",
                    ttft["hypercorn"],
                    "ms",
                    ttft["hypercorn"] / ttft["theirs"],
                    "",
                    None,
                )
            )
    return rows


def run(tokens: int = 128, repeats: int = 3, quick: bool = False, hypercorn: bool = False) -> list[Row]:
    rows = [] if quick else overhead(tokens, repeats)
    rows += versus_llama_server(qwen2_330m(), "330M q8_0", 64, 1 if quick else repeats + 2, hypercorn)
    rows += versus_llama_server(smollm_135m_q4(), "135M Q4_0", 64, 1 if quick else repeats + 2, hypercorn)
    if not quick:
        from bench import anatomy, first_token

        rows += anatomy.run("q8") + anatomy.run("q4") + first_token.run("q4")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serve", description=__doc__)
    parser.add_argument("--tokens", type=int, default=128, help="tokens per request")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats")
    parser.add_argument("--quick", action="store_true", help="llama-server comparison only, one run each")
    parser.add_argument("--hypercorn", action="store_true", help="ours on hypercorn too, in the same rounds")
    args = parser.parse_args(argv)
    from bench.common import table

    rows = run(args.tokens, args.repeats, args.quick, args.hypercorn)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
