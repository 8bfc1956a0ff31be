"""retrieval benchmark: embeddings and reranking on a MiniLM-L6-shaped BERT pair (hidden 384, 6 layers, the real
30,522-token WordPiece vocabulary; random weights, testkit/fixtures/bert.py), the same f16 GGUFs on our server and
on llama.cpp's C++ server (llama-server from the same llama.cpp, bench/llama_server.py) when it is built.

  - embeddings: 256 short texts in 8 requests of 32 (POST /v1/embeddings), texts per second;
  - rerank: one query over 64 documents (POST /v1/rerank), milliseconds per request.

Each figure is the best of `repeats` (this machine is shared), ours and theirs interleaved. llama-server is not
built here when missing (about 15 minutes: `python -m bench.llama_server`): the bench prints one skip line and
measures our side alone.

    python -m bench.retrieval [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from bench import llama_server
from bench.common import Row
from bench.streams import CACHE, THREADS, server
from hearth_common.procs import free_port

SHAPE = dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536,
             max_position_embeddings=512, type_vocab_size=2)  # fmt: skip
TEXTS = [f"Short text number {i} about {topic}." for i, topic in
         enumerate(["rivers", "cities", "music", "physics", "cooking", "trains", "birds", "markets"] * 32)]  # fmt: skip
QUERY = "which documents talk about trains and railway stations"
DOCS = [f"Document {i}: a paragraph about {TEXTS[i * 4][11:-1]} with some more words to read. " * 3 for i in range(64)]
BATCH = 32
CTX = 512


def models() -> dict[str, Path]:
    """The two GGUFs (f16), converted once under .cache/serve/bench/."""
    from convert import convert_checkpoint
    from testkit.fixtures.bert import build_bert_fixture
    from testkit.fixtures.llama_sdist import llama_cpp_source

    src = llama_cpp_source()
    out = {}
    for kind in ("embed", "rerank"):
        folder = build_bert_fixture(kind, src, shape=SHAPE)
        path = CACHE / f"{folder.name}.f16.gguf"
        if not path.is_file():
            CACHE.mkdir(parents=True, exist_ok=True)
            convert_checkpoint(folder, path, "f16", progress=False)
        out[kind] = path
    return out


def embed_rate(url: str) -> float:
    """Texts per second: 256 texts, 8 sequential requests of 32."""
    with httpx.Client(timeout=300) as client:
        t0 = time.perf_counter()
        for i in range(0, len(TEXTS), BATCH):
            r = client.post(url + "/v1/embeddings", json={"input": TEXTS[i : i + BATCH]})
            r.raise_for_status()
            assert len(r.json()["data"]) == BATCH
        return len(TEXTS) / (time.perf_counter() - t0)


def rerank_ms(url: str) -> float:
    with httpx.Client(timeout=300) as client:
        t0 = time.perf_counter()
        r = client.post(url + "/v1/rerank", json={"query": QUERY, "documents": DOCS})
        r.raise_for_status()
        assert len(r.json()["results"]) == len(DOCS)
        return (time.perf_counter() - t0) * 1000


@contextmanager
def ours(model: Path, flag: str) -> Iterator[str]:
    port = free_port()
    argv = ["-m", "serve", "--model-path", str(model), "--port", str(port), "--threads", str(THREADS),
            "--ctx-size", str(CTX), flag]  # fmt: skip
    with server(argv, port) as url:
        yield url


@contextmanager
def theirs(model: Path, flag: str) -> Iterator[str]:
    """llama-server with --embedding (mean pooling from the GGUF) or --reranking; batch = context as ours."""
    exe = llama_server.binary(build=False)
    assert exe is not None
    port = free_port()
    extra = ["--embedding"] if flag == "--embeddings" else ["--reranking"]
    argv = [str(exe), "-m", str(model), "--host", "127.0.0.1", "--port", str(port), "-t", str(THREADS),
            "-tb", str(THREADS), "-c", str(CTX * 4), "-b", str(CTX * 4), "-ub", str(CTX * 4), "-np", "4",
            "--no-webui", *extra]  # fmt: skip
    import os

    from testkit.procs import ServerProcess

    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "LD_LIBRARY_PATH": str(exe.parent)}
    with ServerProcess(argv, ready_url=url + "/health", env=env, label="llama-server", ready_timeout=120, grace=20):
        yield url


def _best(
    measure: Callable[[str], float], model: Path, flag: str, repeats: int, higher: bool, with_theirs: bool
) -> tuple[float, float | None]:
    """Best of `repeats` for ours and (both up at once, interleaved) theirs."""
    pick = max if higher else min
    with ours(model, flag) as url:
        measure(url)  # warm-up
        if not with_theirs:
            return pick(measure(url) for _ in range(repeats)), None
        with theirs(model, flag) as their_url:
            measure(their_url)
            mine, other = [], []
            for _ in range(repeats):
                mine.append(measure(url))
                other.append(measure(their_url))
            return pick(mine), pick(other)


def run(quick: bool = False) -> list[Row]:
    repeats = 2 if quick else 3
    paths = models()
    with_theirs = llama_server.binary(build=False) is not None
    if not with_theirs:
        llama_server.skip("not built (python -m bench.llama_server builds it, ~15 min); measuring ours alone")
    rate, their_rate = _best(embed_rate, paths["embed"], "--embeddings", repeats, True, with_theirs)
    ms, their_ms = _best(rerank_ms, paths["rerank"], "--rerank", repeats, False, with_theirs)
    print(f"ours: {rate:.0f} texts/s embedded, rerank 1 x 64 in {ms:.0f} ms", flush=True)
    if their_rate is not None and their_ms is not None:
        print(f"llama-server: {their_rate:.0f} texts/s embedded, rerank 1 x 64 in {their_ms:.0f} ms", flush=True)
    return [
        Row("retrieval", "embeddings, 256 short texts in batches of 32 (MiniLM-L6 shape, f16)", rate, "texts/s",
            rate / their_rate if their_rate else None, ">= 0.8 x llama-server" if their_rate else "",
            rate >= 0.8 * their_rate if their_rate else None),
        Row("retrieval", "rerank, 1 query x 64 documents (MiniLM-L6 shape, f16)", ms, "ms",
            their_ms / ms if their_ms else None, ">= 0.8 x llama-server (speed)" if their_ms else "",
            their_ms / ms >= 0.8 if their_ms else None),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.retrieval", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    for row in run(quick=args.quick):
        print(row.markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
