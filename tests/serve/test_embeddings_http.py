"""/v1/embeddings with the official `openai` SDK: a real `python -m serve --embeddings` process, directly and
through a real router, checked against transformers' vectors for the same texts (test_embeddings.py's oracle)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from testkit.procs import wait_until
from testkit.servers import running_router, running_server
from testkit.tiny_gguf import build_tiny_gguf
from tests.serve.promtext import sample
from tests.serve.test_embeddings import COSINE, MAX_ABS, TEXTS, hf_vectors

pytestmark = pytest.mark.slow
NAME, ALIAS = "qe", "qwen3-embedding"


@pytest.fixture(scope="module")
def oracle() -> tuple[np.ndarray, list[list[int]]]:
    from testkit.fixtures.embedding import build_qwen3_embedding_fixture

    return hf_vectors(build_qwen3_embedding_fixture(), TEXTS, "last")


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    state = tmp_path_factory.mktemp("router") / "state.json"
    # --open-admin: the servers register themselves with no admin key
    with running_router("--state-file", str(state), "--health-interval", "0.5", "--open-admin") as url:
        yield url


@pytest.fixture(scope="module")
def server(embedding_gguf: Path, router: str) -> Iterator[str]:
    with running_server("--model-path", str(embedding_gguf), "--embeddings", "--model-name", NAME, "--alias", ALIAS,
                        "--ctx-size", "128", "--max-concurrent", "2", "--router", router) as url:  # fmt: skip
        yield url


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)


def _matches(vectors: np.ndarray, want: np.ndarray) -> None:
    cosine = np.sum(vectors * want, axis=1)
    assert cosine.min() >= COSINE and np.abs(vectors - want).max() <= MAX_ABS, (cosine, np.abs(vectors - want).max())


def test_sdk_float_base64_token_ids(server: str, oracle: tuple[np.ndarray, list[list[int]]]) -> None:
    want, ids = oracle
    client = _client(server)
    raw = client.embeddings.with_raw_response.create(model=NAME, input=TEXTS)
    assert json.loads(raw.http_request.content)["encoding_format"] == "base64"  # the SDK's choice with numpy
    default = raw.parse()
    assert [d.index for d in default.data] == [0, 1, 2, 3] and default.model == NAME
    assert default.usage.prompt_tokens == default.usage.total_tokens == sum(map(len, ids))
    vectors = np.array([d.embedding for d in default.data], np.float32)
    _matches(vectors, want)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)

    floats = client.embeddings.create(model=ALIAS, input=TEXTS, encoding_format="float")
    assert np.array_equal(np.array([d.embedding for d in floats.data], np.float32), vectors)  # same float32 values
    b64 = client.embeddings.create(model=NAME, input=TEXTS[1], encoding_format="base64").data[0].embedding
    alone = np.array(client.embeddings.create(model=NAME, input=TEXTS[1], encoding_format="float").data[0].embedding)
    assert isinstance(b64, str) and np.array_equal(
        np.frombuffer(base64.b64decode(b64), "<f4"), alone.astype(np.float32)
    )
    # alone or in a batch: the same vector up to flash attention's rounding (a batch's sums run in another order)
    assert float(alone @ vectors[1]) > 0.9999

    by_ids = client.embeddings.create(model=NAME, input=ids, encoding_format="float")
    assert np.array_equal(np.array([d.embedding for d in by_ids.data], np.float32), vectors)
    one = client.embeddings.create(model=NAME, input=ids[3], encoding_format="float")
    assert one.usage.prompt_tokens == len(ids[3]) and float(np.array(one.data[0].embedding) @ vectors[3]) > 0.9999
    short = client.embeddings.create(model=NAME, input=TEXTS[0], dimensions=16, encoding_format="float").data[0]
    assert len(short.embedding) == 16 and abs(np.linalg.norm(short.embedding) - 1) < 1e-5
    assert client.embeddings.create(input=TEXTS[0], model="").data[0].embedding  # no model named: served


def test_concurrent_requests_each_get_their_vectors(server: str, oracle: tuple[np.ndarray, list[list[int]]]) -> None:
    want, _ = oracle
    client = _client(server)
    order = [k % len(TEXTS) for k in range(12)]

    def one(k: int) -> list[float]:
        return client.embeddings.create(model=NAME, input=[TEXTS[k]] * 3, encoding_format="float").data[2].embedding

    with ThreadPoolExecutor(6) as pool:
        got = np.array(list(pool.map(one, order)), np.float32)
    _matches(got, want[order])


def test_errors_clients_recognise(server: str) -> None:
    client = _client(server)
    with pytest.raises(openai.BadRequestError) as too_long:
        client.embeddings.create(model=NAME, input=["fine", "word " * 400])
    assert too_long.value.code == "context_length_exceeded" and "maximum context length" in too_long.value.message
    assert too_long.value.param == "input"
    with pytest.raises(openai.NotFoundError) as unknown:
        client.embeddings.create(model="text-embedding-3-small", input="x")
    assert unknown.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as chat:
        client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "hi"}])
    assert chat.value.code == "unsupported_endpoint" and "/v1/embeddings" in chat.value.message
    for bad in ([], [""], [[1, 2], "a"], [10**9]):
        with pytest.raises(openai.BadRequestError):
            client.embeddings.create(model=NAME, input=bad)
    r = httpx.post(server + "/v1/embeddings", content=b"{not json", timeout=10)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    metrics = httpx.get(server + "/metrics").text
    for endpoint, reason in (("embeddings", "context_length_exceeded"), ("embeddings", "model_not_found"),
                             ("chat", "unsupported_endpoint"), ("embeddings", "invalid_request")):  # fmt: skip
        assert sample(metrics, "hearth_requests_refused_total", endpoint=endpoint, reason=reason) is not None
    assert sample(metrics, "hearth_requests_total", endpoint="embeddings", status="400") is not None


def test_through_the_router(server: str, router: str, oracle: tuple[np.ndarray, list[list[int]]]) -> None:
    want, _ = oracle
    with running_server("--model-path", str(build_tiny_gguf()), "--model-name", "tiny", "--ctx-size", "256",
                        "--router", router):  # fmt: skip
        client = _client(router)
        assert wait_until(lambda: {NAME, ALIAS, "tiny"} <= {m.id for m in client.models.list().data})
        for name in (NAME, ALIAS):
            raw = client.embeddings.with_raw_response.create(model=name, input=TEXTS)
            assert raw.headers["X-Backend"] == NAME
            _matches(np.array([d.embedding for d in raw.parse().data], np.float32), want)
        with pytest.raises(openai.BadRequestError) as not_embeddings:
            client.embeddings.create(model="tiny", input="x")
        assert not_embeddings.value.code == "unsupported_endpoint" and "--embeddings" in not_embeddings.value.message
        with pytest.raises(openai.BadRequestError) as not_chat:
            client.chat.completions.create(model=ALIAS, messages=[{"role": "user", "content": "hi"}])
        assert not_chat.value.code == "unsupported_endpoint"
        with pytest.raises(openai.NotFoundError):
            client.embeddings.create(model="nobody", input="x")
        backends = {b["name"]: b for b in httpx.get(router + "/backends").json()["backends"]}
        assert backends[NAME]["errors"] == 0 and backends["tiny"]["errors"] == 0  # client errors never count
