"""Retrieval on real servers: a BERT cross-encoder behind `python -m serve --rerank` (POST /v1/rerank, /rerank,
/v2/rerank over plain HTTP, directly and through a real router) and a BERT embedding model behind --embeddings
(the `openai` SDK), checked against sentence-transformers (CrossEncoder.predict, SentenceTransformer.encode) on the
tiny checkpoints of testkit/fixtures/bert.py; then the bad inputs, each a clear 4xx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

sentence_transformers = pytest.importorskip("sentence_transformers")
torch = pytest.importorskip("torch")

from testkit.procs import wait_until  # noqa: E402
from testkit.servers import running_router, running_server  # noqa: E402

pytestmark = pytest.mark.slow

RERANKER, EMBEDDER = "bert-rerank", "bert-embed"
QUERY = "what is the capital of france"
DOCS = [
    "Paris is the capital and largest city of France.",
    "The Eiffel Tower is in Paris.",
    "Berlin is the capital of Germany.",
    "Bananas are yellow.",
    "France borders Spain, Italy, Germany and Belgium.",
    "café naïve résumé — 東京",
    "",
    "The quick brown fox jumps over the lazy dog. " * 30,  # longer than the 128-token context: cut to fit
]
SCORE_ABS = 1e-4  # sigmoid scores, f32 GGUF (measured: 3.3e-5)
# raw logits (measured: 2.1e-4; with token type 0 everywhere, as llama.cpp feeds a pair: 0.069, order changed)
LOGIT_ABS = 1e-3


def cross_encoder_scores(ce: Any) -> tuple[np.ndarray, np.ndarray]:
    """CrossEncoder.predict's scores (sigmoid, its default for one label) and raw logits for (QUERY, DOCS)."""
    pairs = [(QUERY, d) for d in DOCS]
    return ce.predict(pairs), ce.predict(pairs, activation_fn=torch.nn.Identity())


def bert_folders(*kinds: str) -> dict[str, Path]:
    """The tiny checkpoints of testkit/fixtures/bert.py by kind; the test skipped, saying why, without llama.cpp's
    sdist (their vocabularies come from it)."""
    from testkit.fixtures.bert import build_bert_fixture
    from testkit.fixtures.llama_sdist import SdistUnavailable, llama_cpp_source

    try:
        src = llama_cpp_source()
    except SdistUnavailable as e:
        pytest.skip(f"llama.cpp's sdist files are not available: {e}")
    return {kind: build_bert_fixture(kind, src) for kind in kinds}


def f32_ggufs(folders: dict[str, Path], root: Path) -> dict[str, Path]:
    """Each checkpoint converted to an f32 GGUF under `root`, by kind."""
    from convert import convert_checkpoint

    return {k: convert_checkpoint(f, root / f"{k}.f32.gguf", "f32", progress=False) for k, f in folders.items()}


@pytest.fixture(scope="module")
def folders() -> dict[str, Path]:
    return bert_folders("rerank", "embed")


@pytest.fixture(scope="module")
def ggufs(folders: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return f32_ggufs(folders, tmp_path_factory.mktemp("bert-gguf"))


@pytest.fixture(scope="module")
def oracle(folders: dict[str, Path]) -> tuple[np.ndarray, np.ndarray]:
    return cross_encoder_scores(sentence_transformers.CrossEncoder(str(folders["rerank"]), device="cpu"))


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    state = tmp_path_factory.mktemp("router") / "state.json"
    with running_router("--state-file", str(state), "--health-interval", "0.5", "--open-admin") as url:
        yield url


@pytest.fixture(scope="module")
def reranker(ggufs: dict[str, Path], router: str) -> Iterator[str]:
    with running_server("--model-path", str(ggufs["rerank"]), "--rerank", "--model-name", RERANKER,
                        "--ctx-size", "128", "--router", router) as url:  # fmt: skip
        yield url


@pytest.fixture(scope="module")
def embedder(ggufs: dict[str, Path], router: str) -> Iterator[str]:
    with running_server("--model-path", str(ggufs["embed"]), "--embeddings", "--model-name", EMBEDDER,
                        "--ctx-size", "128", "--router", router) as url:  # fmt: skip
        yield url


def rerank(url: str, path: str = "/v1/rerank", **body: object) -> httpx.Response:
    return httpx.post(url + path, json={"query": QUERY, "documents": DOCS, **body}, timeout=60)


def assert_scores_equal(url: str, want: np.ndarray, want_raw: np.ndarray) -> httpx.Response:
    """The server's order, scores and raw scores for (QUERY, DOCS) are CrossEncoder's; returns the scored answer."""
    r = rerank(url)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["index"] for x in results] == sorted(range(len(DOCS)), key=lambda i: -want[i])  # CrossEncoder's order
    got = np.array([x["relevance_score"] for x in sorted(results, key=lambda x: x["index"])])
    assert np.abs(got - want).max() <= SCORE_ABS, np.abs(got - want).max()
    raw = rerank(url, raw_scores=True).json()["results"]
    got_raw = np.array([x["relevance_score"] for x in sorted(raw, key=lambda x: x["index"])])
    assert np.abs(got_raw - want_raw).max() <= LOGIT_ABS, np.abs(got_raw - want_raw).max()
    return r


def test_scores_equal_cross_encoder(reranker: str, oracle: tuple[np.ndarray, np.ndarray]) -> None:
    assert_scores_equal(reranker, *oracle)


def test_answer_shape_top_n_documents_and_spellings(reranker: str, folders: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folders["rerank"])
    full = rerank(reranker).json()
    assert full["model"] == RERANKER and full["object"] == "list" and len(full["results"]) == len(DOCS)
    assert all(set(x) == {"index", "relevance_score"} for x in full["results"])
    # usage: the tokens scored, each pair as CrossEncoder's batched call builds it (truncated to the 128-token context;
    # an empty document keeps its [SEP])
    n = sum(map(len, tok([[QUERY, d] for d in DOCS], truncation=True, max_length=128).input_ids))
    assert full["usage"] == {"prompt_tokens": n, "total_tokens": n}
    docs = [{"text": d} for d in DOCS]  # Jina's objects
    for path in ("/rerank", "/v2/rerank"):
        r = httpx.post(reranker + path, json={"query": QUERY, "documents": docs, "top_n": 3, "return_documents": True})
        assert r.status_code == 200, r.text
        top = r.json()["results"]
        assert [x["index"] for x in top] == [x["index"] for x in full["results"][:3]]
        assert [x["document"] for x in top] == [{"text": DOCS[x["index"]]} for x in top]


def test_through_the_router_by_model(reranker: str, embedder: str, router: str) -> None:
    def names() -> set[str]:
        return {m["id"] for m in httpx.get(router + "/v1/models").json()["data"]}

    assert wait_until(lambda: {RERANKER, EMBEDDER} <= names(), timeout=20)
    direct = rerank(reranker).json()["results"]
    for path in ("/v1/rerank", "/rerank", "/v2/rerank"):
        r = rerank(router, path, model=RERANKER)
        assert r.status_code == 200, r.text
        assert r.json()["results"] == direct
    wrong = rerank(router, model=EMBEDDER)  # routed to the embeddings model, which refuses
    assert wrong.status_code == 400 and wrong.json()["error"]["code"] == "unsupported_endpoint"
    # each server's /v1/models says what it does, and the router's says the same (as they registered)
    assert httpx.get(reranker + "/v1/models").json()["data"][0]["capabilities"] == ["rerank"]
    assert httpx.get(embedder + "/v1/models").json()["data"][0]["capabilities"] == ["embeddings"]
    listed = {m["id"]: m.get("capabilities") for m in httpx.get(router + "/v1/models").json()["data"]}
    assert (listed[RERANKER], listed[EMBEDDER]) == (["rerank"], ["embeddings"])


def test_bert_embeddings_through_the_openai_sdk(embedder: str, folders: dict[str, Path]) -> None:
    import openai

    texts = ["Hello world!", "The capital of France is Paris.", "café naïve résumé", "a " * 200]
    client = openai.OpenAI(base_url=embedder + "/v1", api_key="none", max_retries=0)
    short = texts[:3]
    got = np.array([d.embedding for d in client.embeddings.create(model=EMBEDDER, input=short).data])
    want = sentence_transformers.SentenceTransformer(str(folders["embed"]), device="cpu").encode(short)
    cosine = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cosine.min() >= 0.9999, cosine
    with pytest.raises(openai.BadRequestError, match="context length"):  # embeddings are not truncated
        client.embeddings.create(model=EMBEDDER, input=texts[3:])


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        ({"query": QUERY, "documents": []}, "invalid_request", "documents"),
        ({"query": QUERY, "documents": ["x"] * 1001}, "invalid_request", "1000"),
        ({"query": QUERY, "documents": [1, 2]}, "invalid_request", "documents"),
        ({"query": QUERY, "documents": [{"content": "x"}]}, "invalid_request", "documents"),
        ({"documents": ["x"]}, "invalid_request", "query"),
        ({"query": "", "documents": ["x"]}, "invalid_request", "query"),
        ({"query": QUERY, "documents": ["x"], "top_n": 0}, "invalid_request", "top_n"),
        ({"query": "word " * 200, "documents": ["x"]}, "context_length_exceeded", "query"),
        ({"model": "nope", "query": QUERY, "documents": ["x"]}, "model_not_found", "nope"),
    ],
)
def test_bad_input_is_a_clear_4xx(reranker: str, body: dict, code: str, words: str) -> None:
    r = httpx.post(reranker + "/v1/rerank", json=body, timeout=30)
    assert 400 <= r.status_code < 500, r.text
    error = r.json()["error"]
    assert error["code"] == code and words in error["message"], error


def test_the_wrong_kind_of_server_refuses(reranker: str, embedder: str) -> None:
    from testkit.tiny_gguf import build_tiny_gguf

    on_embedder = rerank(embedder)
    assert on_embedder.status_code == 400 and "--rerank" in on_embedder.json()["error"]["message"]
    embed_on_reranker = httpx.post(reranker + "/v1/embeddings", json={"input": "x"})
    assert embed_on_reranker.status_code == 400 and "reranker" in embed_on_reranker.json()["error"]["message"]
    chat_on_reranker = httpx.post(
        reranker + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]}
    )
    assert chat_on_reranker.status_code == 400
    with running_server("--model-path", str(build_tiny_gguf()), "--ctx-size", "256") as chat:
        r = rerank(chat)
        assert r.status_code == 400 and r.json()["error"]["code"] == "unsupported_endpoint", r.text
