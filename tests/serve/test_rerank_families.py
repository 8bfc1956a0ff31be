"""The encoder families beyond BERT on real servers: an XLM-RoBERTa cross-encoder behind `python -m serve --rerank`
(plain HTTP, against CrossEncoder.predict), XLM-RoBERTa, NomicBERT and ModernBERT embedding models behind --embeddings (the
`openai` SDK, against SentenceTransformer.encode), on the tiny checkpoints of testkit/fixtures/bert.py. The request
shapes and their errors are the BERT tests' (tests/serve/test_rerank.py); what a family changes is checked here:
XLM-R's pair (<s> query </s></s> document </s>, one token type) and its context bound."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

sentence_transformers = pytest.importorskip("sentence_transformers")
torch = pytest.importorskip("torch")

from testkit.servers import running_server  # noqa: E402
from tests.serve.test_rerank import (  # noqa: E402
    DOCS,
    QUERY,
    assert_scores_equal,
    bert_folders,
    cross_encoder_scores,
    f32_ggufs,
)

pytestmark = pytest.mark.slow

KINDS = ("xlmr-rerank", "xlmr-embed", "nomic-embed", "modernbert-embed")
COSINE_MIN = 0.9999
TEXTS = ["Hello world!", "The capital of France is Paris.", "café naïve résumé", "Привет, мир. 東京に行きます。"]


@pytest.fixture(scope="module")
def folders() -> dict[str, Path]:
    return bert_folders(*KINDS)


@pytest.fixture(scope="module")
def ggufs(folders: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return f32_ggufs(folders, tmp_path_factory.mktemp("encoder-gguf"))


@pytest.fixture(scope="module")
def reranker(ggufs: dict[str, Path]) -> Iterator[str]:
    with running_server("--model-path", str(ggufs["xlmr-rerank"]), "--rerank", "--ctx-size", "128") as url:
        yield url


def test_xlmr_scores_equal_cross_encoder(reranker: str, folders: dict[str, Path]) -> None:
    ce = sentence_transformers.CrossEncoder(str(folders["xlmr-rerank"]), device="cpu")
    r = assert_scores_equal(reranker, *cross_encoder_scores(ce))
    pairs = [(QUERY, d) for d in DOCS]
    # the tokens scored are the pairs XLMRobertaTokenizer builds (</s></s> between the parts), cut to the context
    n = sum(map(len, ce.tokenizer(pairs, truncation=True, max_length=128).input_ids))
    assert r.json()["usage"]["prompt_tokens"] == n


def test_xlmr_query_without_room_is_a_clear_4xx(reranker: str) -> None:
    r = httpx.post(reranker + "/v1/rerank", json={"query": "word " * 130, "documents": ["x"]}, timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "context_length_exceeded"


@pytest.mark.parametrize("kind", ["xlmr-embed", "nomic-embed", "modernbert-embed"])
def test_embeddings_through_the_openai_sdk(ggufs: dict[str, Path], folders: dict[str, Path], kind: str) -> None:
    import openai

    with running_server("--model-path", str(ggufs[kind]), "--embeddings", "--model-name", kind,
                        "--ctx-size", "128") as url:  # fmt: skip
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
        got = np.array([d.embedding for d in client.embeddings.create(model=kind, input=TEXTS).data])
        with pytest.raises(openai.BadRequestError, match="context length"):  # not truncated
            client.embeddings.create(model=kind, input="a " * 200)
    want = sentence_transformers.SentenceTransformer(str(folders[kind]), device="cpu").encode(TEXTS)
    cosine = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cosine.min() >= COSINE_MIN, cosine
