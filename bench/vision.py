"""Images: time to first token with one and four images, and text streams beside image requests; ours against
llama.cpp's server with `--mmproj` on the same GGUF pair when it is built (bench/llama_server.py; not built here:
one skip line, never a build).

The model: a synthetic Gemma 3 vision checkpoint with random weights (`build_model`): testkit's tiny Gemma 3 text
model (a text step costs little, as beside a GPU) and a SigLIP tower of real-ish cost (448x448 images in 14x14
patches: 1,024 patches, 6 layers, hidden 384) pooled to 256 image tokens, converted here (NAME.gguf and
NAME.mmproj.gguf). Every request sends pictures no earlier request sent (its own colours): both servers key their
prompt caches by image content, and a resent picture would be read from the cache, not encoded.

Rows: TTFT with 1 and 4 images (ratio: against a text-only request's TTFT in the same run); the aggregate rate of 4
text streams while image requests keep arriving (ratio: against the same streams alone); with llama-server, each
of ours against its figure.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import llama_server
from bench.common import Row
from bench.streams import CACHE, THREADS, serve_argv, server
from hearth_common.procs import free_port
from testkit.images import png
from testkit.procs import ServerProcess

NAME = "bench-g3v"
VISION: dict[str, Any] = {
    "hidden_size": 384,
    "intermediate_size": 1536,
    "num_hidden_layers": 6,
    "num_attention_heads": 6,
    "image_size": 448,
    "patch_size": 14,
    "vision_use_head": False,
}
TOKENS_PER_IMAGE = 256  # 32x32 patches pooled by 2
STREAM_TOKENS = 48
CTX = 2048
SEQS = 8
_colour = itertools.count(1)


def build_model() -> Path:
    """The converted GGUF (its projector beside it), cached under .cache/serve/bench/ by this file's hash."""
    key = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
    out = CACHE / f"{NAME}-{key}.gguf"
    if out.is_file():
        return out
    from convert import convert_checkpoint
    from testkit.fixtures.build import build_fixture

    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        src = Path(tmp) / "hf"
        src.mkdir()
        _checkpoint(build_fixture("gemma3"), src)
        convert_checkpoint(src, out, "f16", progress=False)
    return out


def _checkpoint(text: Path, folder: Path) -> None:
    import torch
    import transformers

    from testkit.fixtures.vision import MEAN, STD, add_image_tokens, gemma3_config, write_preprocessor

    for name in ("tokenizer.model", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        shutil.copy(text / name, folder / name)
    _, ids = add_image_tokens(text, folder)
    lm = transformers.Gemma3ForCausalLM.from_pretrained(text, dtype=torch.float32)
    lm.config.max_position_embeddings = max(lm.config.max_position_embeddings, CTX)
    config = gemma3_config(lm.config, VISION, TOKENS_PER_IMAGE, ids)
    torch.manual_seed(1)
    model = transformers.Gemma3ForConditionalGeneration(config).eval()
    model.model.language_model.load_state_dict(lm.model.state_dict())
    model.save_pretrained(folder, safe_serialization=True)
    write_preprocessor(folder, VISION["image_size"], MEAN, STD, TOKENS_PER_IMAGE)


def picture() -> str:
    """A 64x64 PNG of a colour no earlier request used, as a data: URL."""
    n = next(_colour)
    rgb = (n * 37 % 256, n * 91 % 256, n * 157 % 256)
    return "data:image/png;base64," + base64.b64encode(png(64, 64, rgb)).decode()


def body(images: int, max_tokens: int) -> dict[str, Any]:
    parts = [{"type": "image_url", "image_url": {"url": picture()}} for _ in range(images)]
    content = [{"type": "text", "text": "Describe the picture."}, *parts] if images else "Describe a picture."
    return {
        "model": NAME,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }


async def _stream(session: Any, url: str, payload: dict[str, Any]) -> tuple[int, float]:
    """One streaming chat request: (content pieces received, seconds to the first)."""
    t0 = time.perf_counter()
    first = None
    count = 0
    async with session.post(url + "/v1/chat/completions", json=payload) as response:
        response.raise_for_status()
        async for line in response.content:
            if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                continue
            choices = json.loads(line[6:]).get("choices") or [{}]
            if choices[0].get("delta", {}).get("content"):
                count += 1
                first = first or time.perf_counter()
    return count, (first or time.perf_counter()) - t0


def measure(url: str, rounds: int) -> dict[str, float]:
    """TTFT (s, median of `rounds`) with 0, 1 and 4 images; text streams' tok/s alone and beside image requests."""
    import aiohttp

    async def go() -> dict[str, float]:
        timeout = aiohttp.ClientTimeout(total=600)
        # a connection a request (both servers alike): llama-server closes idle keep-alive connections, and a
        # pooled one it closed fails the next request's write
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            await _stream(session, url, body(1, 2))  # warm-up: the projector's first graph
            out: dict[str, float] = {}
            for images in (0, 1, 4):
                ttfts = [(await _stream(session, url, body(images, 1)))[1] for _ in range(rounds)]
                out[f"ttft{images}"] = statistics.median(ttfts)

            async def streams() -> float:
                t0 = time.perf_counter()
                got = await asyncio.gather(*(_stream(session, url, body(0, STREAM_TOKENS)) for _ in range(4)))
                return sum(n for n, _ in got) / (time.perf_counter() - t0)

            out["alone"] = statistics.median([await streams() for _ in range(rounds)])

            async def feed(stop: asyncio.Event) -> None:
                while not stop.is_set():
                    await _stream(session, url, body(1, 4))

            beside = []
            for _ in range(rounds):
                stop = asyncio.Event()
                feeder = asyncio.create_task(feed(stop))
                await asyncio.sleep(0.05)  # an image request is in flight as the streams start
                beside.append(await streams())
                stop.set()
                await feeder
            out["beside"] = statistics.median(beside)
            return out

    return asyncio.run(go())


@contextmanager
def llama(model: Path, port: int) -> Iterator[str] | Iterator[None]:
    """llama-server --mmproj on the same pair, when built (None otherwise, after one skip line)."""
    exe = llama_server.binary(build=False)
    if exe is None:
        llama_server.skip(f"not built under {llama_server.BUILD} (python -m bench.llama_server builds it)")
        yield None
        return
    mmproj = model.with_name(model.name.removesuffix(".gguf") + ".mmproj.gguf")
    argv = [
        str(exe), "-m", str(model), "--mmproj", str(mmproj), "--host", "127.0.0.1", "--port", str(port),
        "-np", str(SEQS), "-c", str(CTX * SEQS), "-t", str(THREADS), "-tb", str(THREADS), "-fa", "off", "--no-webui",
        "-a", NAME,
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "LD_LIBRARY_PATH": str(exe.parent)}
    with ServerProcess(argv, ready_url=url + "/health", env=env, label="llama-server", ready_timeout=120, grace=20):
        yield url


def rows(who: str, m: dict[str, float], base: dict[str, float] | None) -> list[Row]:
    """Our rows carry ratios against our text-only baseline; llama-server's rows, and a row of ours against it."""
    out = [
        Row("vision", f"{who}: TTFT, 1 image vs text only", m["ttft1"] * 1000, "ms", m["ttft1"] / m["ttft0"], "", None),
        Row("vision", f"{who}: TTFT, 4 images vs text only", m["ttft4"] * 1000, "ms", m["ttft4"] / m["ttft0"], "", None),
        Row("vision", f"{who}: 4 text streams beside image requests vs alone", m["beside"], "tok/s",
            m["beside"] / m["alone"], "", None),
    ]  # fmt: skip
    if base is not None:
        out += [
            Row("vision", "ours/llama-server: TTFT, 1 image", m["ttft1"] * 1000, "ms", m["ttft1"] / base["ttft1"], "",
                None),
            Row("vision", "ours/llama-server: TTFT, 4 images", m["ttft4"] * 1000, "ms", m["ttft4"] / base["ttft4"], "",
                None),
            Row("vision", "ours/llama-server: text streams beside images", m["beside"], "tok/s",
                m["beside"] / base["beside"], "", None),
        ]  # fmt: skip
    return out


def run(quick: bool = False) -> list[Row]:
    rounds = 2 if quick else 5
    model = build_model()
    port = free_port()
    with server(serve_argv(model, port, "--model-name", NAME, ctx=CTX, seqs=SEQS), port) as url:
        ours = measure(url, rounds)
    theirs = None
    with llama(model, free_port()) as url2:
        if url2 is not None:
            theirs = measure(url2, rounds)
    return (rows("llama-server", theirs, None) if theirs else []) + rows("ours", ours, theirs)


if __name__ == "__main__":
    from bench.common import table

    print(table(run(quick=True)))
