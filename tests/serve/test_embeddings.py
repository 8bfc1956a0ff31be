"""Embeddings: the request shapes and encodings (pure), and llama.cpp's pooled vectors against transformers.

The oracle is transformers' Qwen3Model on the Qwen3-Embedding-shaped fixture (testkit/fixtures/embedding.py): the
normalized last hidden state at the pooled position(s), for the token ids the HF tokenizer makes (which append
`<|endoftext|>`, as Qwen3-Embedding's do). Measured on this fixture (f32 GGUF): cosine >= 0.9999995 and max abs
difference <= 3.2e-4 for last, mean and cls pooling; the tests hold them to cosine >= 0.99999 and 1e-3.
"""

from __future__ import annotations

import base64
import threading
from pathlib import Path

import numpy as np
import pytest

from serve.api.embeddings import MAX_INPUTS, EmbeddingRequest, encode, finish, parse_input
from serve.engine.embedder import Embedded, Embedder, EmbedJob, take

COSINE, MAX_ABS = 0.99999, 1e-3
TEXTS = [
    "hello world",
    "The quick brown fox jumps over the lazy dog.",
    "a",
    "Embeddings turn text into vectors; similar texts get similar vectors, and that is what retrieval needs.",
]


# -- pure parts -------------------------------------------------------------------------------------------------


def test_input_shapes() -> None:
    assert parse_input("hi") == ["hi"]
    assert parse_input(["a", "b"]) == ["a", "b"]
    assert parse_input([1, 2, 3]) == [[1, 2, 3]]
    assert parse_input([[1, 2], [3]]) == [[1, 2], [3]]
    for bad, words in [
        ("", "empty string"), ([], "not be empty"), (["a", ""], "empty string"), ([[1], []], "empty list"),
        (["a", 1], "not a mix"), ([[1], "a"], "not a mix"), ([True, 2], "not a mix"), ([[1.5]], "not a mix"),
        ({"text": "a"}, "must be a string"), (None, "must be a string"), (["a"] * (MAX_INPUTS + 1), "at most"),
    ]:  # fmt: skip
        with pytest.raises(ValueError, match=words):
            parse_input(bad)
    req = EmbeddingRequest.model_validate({"input": [5, 6], "encoding_format": "base64", "model": "m", "x": 1})
    assert req.input == [[5, 6]] and req.encoding_format == "base64"


def test_take_packs_in_order_within_both_limits() -> None:
    assert take([3, 3, 3], max_seqs=8, max_tokens=7) == 2
    assert take([3, 3, 3], max_seqs=2, max_tokens=100) == 2
    assert take([10, 1], max_seqs=8, max_tokens=4) == 1  # the first input always goes (it fits the context)
    assert take([2, 9, 1], max_seqs=8, max_tokens=10) == 1  # in arrival order: the 1 waits behind the 9
    assert take([4, 4], max_seqs=8, max_tokens=8) == 2


def test_finish_normalizes_truncates_and_keeps_zero_rows() -> None:
    rows = np.array([[3.0, 4.0, 12.0], [0.0, 0.0, 0.0]], np.float32)
    out = finish(rows, None)
    assert np.allclose(out[0], [3 / 13, 4 / 13, 12 / 13]) and not out[1].any()
    assert np.allclose(finish(rows, 2)[0], [0.6, 0.8])
    assert out.dtype == np.float32


def test_base64_is_little_endian_float32() -> None:
    vector = finish(np.random.default_rng(0).standard_normal((1, 16)).astype(np.float32), None)[0]
    raw = base64.b64decode(encode(vector, "base64"))
    assert len(raw) == 16 * 4 and np.array_equal(np.frombuffer(raw, "<f4"), vector)
    assert encode(vector, "float") == [float(x) for x in vector]


# -- llama.cpp against transformers -------------------------------------------------------------------------------


def hf_vectors(folder: Path, texts: list[str], pooling: str) -> tuple[np.ndarray, list[list[int]]]:
    """transformers' normalized pooled last hidden state, and the token ids it embedded."""
    import torch
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModel.from_pretrained(folder).eval()
    out, ids = [], []
    for text in texts:
        enc = tok(text, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**enc).last_hidden_state[0]
        pooled = {"last": hidden[-1], "mean": hidden.mean(0), "cls": hidden[0]}[pooling].numpy()
        out.append(pooled / np.linalg.norm(pooled))
        ids.append(enc.input_ids[0].tolist())
    return np.stack(out), ids


def embed(embedder: Embedder, inputs: list[list[int]]) -> Embedded:
    got: list[object] = []
    done = threading.Event()
    embedder.submit(EmbedJob(inputs, lambda event: (got.append(event), done.set())))
    assert done.wait(30)
    assert isinstance(got[0], Embedded), got[0]
    return got[0]


@pytest.mark.slow
@pytest.mark.parametrize("pooling", [None, "mean", "cls"])  # None: the GGUF's own, last
def test_vectors_match_transformers(embedding_gguf: Path, pooling: str | None) -> None:
    from serve.engine.engine import Model
    from testkit.fixtures.embedding import build_qwen3_embedding_fixture

    want, hf_ids = hf_vectors(build_qwen3_embedding_fixture(), TEXTS, pooling or "last")
    model = Model(embedding_gguf)
    embedder = Embedder(model, max(map(len, hf_ids)), pooling=pooling, threads=2)
    embedder.start()
    try:
        assert embedder.pooling == (pooling or "last")
        ids = [model.tokenize(t, add_special=True) for t in TEXTS]
        assert ids == hf_ids  # <|endoftext|> appended, as the HF tokenizer does (the GGUF's add_eos)
        assert 2 * sum(map(len, ids)) > embedder.n_batch  # twice over: several llama_decode calls, several
        result = embed(embedder, ids + ids)  # sequences in each
        got = finish(result.vectors, None)
        assert result.prompt_tokens == 2 * sum(map(len, ids))
        assert np.allclose(got[:4], got[4:], atol=1e-5)
        got = got[:4]
        cosine = np.sum(got * want, axis=1)
        assert cosine.min() >= COSINE and np.abs(got - want).max() <= MAX_ABS, (cosine, np.abs(got - want).max())
        alone = finish(embed(embedder, ids[1:2]).vectors, None)[0]  # batching does not change a vector
        assert np.allclose(alone, got[1], atol=1e-5)
    finally:
        embedder.close()


@pytest.mark.slow
def test_concurrent_jobs_and_cancellation(embedding_gguf: Path) -> None:
    """Jobs submitted together are answered each with its own vectors; a cancelled one gets `cancelled`."""
    from serve.engine.engine import Failed, Model

    model = Model(embedding_gguf)
    embedder = Embedder(model, 128, threads=1)
    try:
        ids = [model.tokenize(t, add_special=True) for t in TEXTS]
        events: dict[int, object] = {}
        done = threading.Semaphore(0)
        jobs = [EmbedJob([ids[k % len(ids)]] * 3, lambda e, k=k: (events.__setitem__(k, e), done.release()))
                for k in range(6)]  # fmt: skip
        jobs[4].cancelled = True  # before the thread sees it
        for job in jobs:
            embedder.submit(job)
        embedder.start()
        for _ in jobs:
            assert done.acquire(timeout=30)
        assert isinstance(events[4], Failed) and events[4].message == "cancelled"
        first = finish(embed(embedder, [ids[0]]).vectors, None)[0]
        for k in (0, 1, 2, 3, 5):
            vectors = finish(events[k].vectors, None)
            assert np.allclose(vectors, vectors[0], atol=1e-5)
        assert np.allclose(finish(events[0].vectors, None)[0], first, atol=1e-5)
    finally:
        embedder.close()


def test_a_model_without_pooling_is_refused() -> None:
    """The tiny generation model declares no pooling: loading it for embeddings names --pooling."""
    from serve.engine.context import EngineError
    from serve.engine.engine import Model
    from testkit.tiny_gguf import build_tiny_gguf

    model = Model(build_tiny_gguf())
    try:
        with pytest.raises(EngineError, match="--pooling"):
            Embedder(model, 64, threads=1)
        embedder = Embedder(model, 64, pooling="mean", threads=1)  # an explicit pooling is enough
        embedder.start()
        assert embed(embedder, [[1, 2, 3]]).vectors.shape == (1, 64)
        embedder.stop()
    finally:
        model.close()


def test_an_embeddings_app_without_pooling_says_why_and_with_it_serves() -> None:
    """--embeddings on a model that declares no pooling: /health names --pooling, requests get 503; with
    --pooling mean the same model serves embeddings (and refuses chat)."""
    import asyncio

    from serve.app import create_app
    from serve.config import ServeConfig
    from testkit.tiny_gguf import build_tiny_gguf

    async def run(config: ServeConfig) -> list[tuple[int, dict]]:
        async with create_app(config).test_app() as test_app:
            client = test_app.test_client()
            for _ in range(300):
                health = await client.get("/health")
                if (await health.get_json())["status"] != "loading":
                    break
                await asyncio.sleep(0.02)
            out = [(health.status_code, await health.get_json())]
            for path, body in (("/v1/embeddings", {"input": ["abc", "de"]}),
                               ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})):  # fmt: skip
                r = await client.post(path, json=body)
                out.append((r.status_code, await r.get_json()))
            return out

    base = dict(model_path=build_tiny_gguf(), embeddings=True, ctx_size=64, threads=1)
    (status, health), (e_status, e_body), (c_status, c_body) = asyncio.run(run(ServeConfig(**base)))
    assert status == 503 and health["status"] == "error" and "--pooling" in health["error"]
    assert e_status == 503 and e_body["error"]["code"] == "model_loading"
    assert c_status == 400 and c_body["error"]["code"] == "unsupported_endpoint"
    (status, _), (e_status, e_body), (c_status, _) = asyncio.run(run(ServeConfig(**base, pooling="mean")))
    assert status == 200 and e_status == 200 and c_status == 400
    assert [len(d["embedding"]) for d in e_body["data"]] == [64, 64] and e_body["usage"]["prompt_tokens"] == 5
