"""Qwen3-Reranker behind `python -m serve --rerank`: a tiny random Qwen3ForCausalLM with the real Qwen tokenizer
(testkit/fixtures/qwen3_reranker.py), converted as llama.cpp converts it, scored against the model card's recipe run
in transformers: softmax over the [no, yes] logits of the last token of the card's prompt (system prompt,
`<Instruct>`, `<Query>`, `<Document>`, the assistant's empty `<think>` block), with the card's truncation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from testkit.servers import running_server  # noqa: E402

pytestmark = pytest.mark.slow

CTX = 256
QUERY = "what is the capital of france"
DOCS = [
    "Paris is the capital and largest city of France.",
    "The Eiffel Tower is in Paris.",
    "Berlin is the capital of Germany.",
    "Bananas are yellow.",
    "café naïve résumé — 東京 2024",
    "",
    "The quick brown fox jumps over the lazy dog. " * 40,  # longer than the context: cut inside the document
]
# the model card's recipe (Qwen/Qwen3-Reranker-0.6B), word for word
PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
SCORE_ABS = 1e-3  # P(yes), f32 GGUF, f16 KV cache (measured: up to 1.9e-4)
LOGIT_ABS = 5e-3  # the yes-no logit difference


def card_recipe(folder: Path, query: str, docs: list[str], max_length: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(scores, yes-no logit differences, tokens scored) as the model card computes them, one pair at a time."""
    tok = transformers.AutoTokenizer.from_pretrained(folder, padding_side="left")
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    yes, no = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")
    prefix, suffix = tok.encode(PREFIX, add_special_tokens=False), tok.encode(SUFFIX, add_special_tokens=False)
    pairs = [f"<Instruct>: {INSTRUCTION}\n<Query>: {query}\n<Document>: {doc}" for doc in docs]
    enc = tok(pairs, padding=False, truncation="longest_first", return_attention_mask=False,
              max_length=max_length - len(prefix) - len(suffix))  # fmt: skip
    scores, diffs, n = [], [], 0
    with torch.no_grad():
        for ids in enc["input_ids"]:
            full = prefix + ids + suffix
            n += len(full)
            logits = model(torch.tensor([full])).logits[0, -1]
            pair = torch.stack([logits[no], logits[yes]])
            scores.append(float(torch.log_softmax(pair, 0)[1].exp()))
            diffs.append(float(logits[yes] - logits[no]))
    return np.array(scores), np.array(diffs), n


@pytest.fixture(scope="module", params=["untied", "tied"])
def case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from convert import convert_checkpoint
    from testkit.fixtures.llama_sdist import SdistUnavailable, llama_cpp_source
    from testkit.fixtures.qwen3_reranker import build_qwen3_reranker_fixture

    try:
        src = llama_cpp_source()
    except SdistUnavailable as e:
        pytest.skip(f"llama.cpp's sdist files are not available: {e}")
    folder = build_qwen3_reranker_fixture(src, tied=request.param == "tied")
    out = tmp_path_factory.mktemp("qwen3-rerank") / f"{request.param}.f32.gguf"
    return folder, convert_checkpoint(folder, out, "f32", progress=False)  # a reranker by its model card


@pytest.fixture(scope="module")
def server(case: tuple[Path, Path]) -> Iterator[str]:
    with running_server("--model-path", str(case[1]), "--rerank", "--model-name", "qrr", "--ctx-size", str(CTX)) as url:
        yield url


def by_index(results: list[dict]) -> np.ndarray:
    return np.array([x["relevance_score"] for x in sorted(results, key=lambda x: x["index"])])


def test_scores_equal_the_model_cards_recipe(server: str, case: tuple[Path, Path]) -> None:
    want, want_diff, n = card_recipe(case[0], QUERY, DOCS, CTX)
    r = httpx.post(server + "/v1/rerank", json={"query": QUERY, "documents": DOCS}, timeout=60)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert [x["index"] for x in answer["results"]] == sorted(range(len(DOCS)), key=lambda i: (-want[i], i))
    got = by_index(answer["results"])
    print(f"max |score - card| = {np.abs(got - want).max():.2e}; scores span {want.min():.3f}..{want.max():.3f}")
    assert np.abs(got - want).max() <= SCORE_ABS, np.abs(got - want).max()
    assert answer["usage"] == {"prompt_tokens": n, "total_tokens": n}  # the long document cut as the card cuts it
    raw = httpx.post(server + "/rerank", json={"query": QUERY, "documents": DOCS, "raw_scores": True}, timeout=60)
    got_diff = by_index(raw.json()["results"])
    print(f"max |raw - (logit yes - logit no)| = {np.abs(got_diff - want_diff).max():.2e}")
    assert np.abs(got_diff - want_diff).max() <= LOGIT_ABS, np.abs(got_diff - want_diff).max()


def test_top_n_documents_and_a_query_too_long(server: str) -> None:
    r = httpx.post(
        server + "/v2/rerank", json={"query": QUERY, "documents": DOCS, "top_n": 2, "return_documents": True}
    )
    assert r.status_code == 200, r.text
    top = r.json()["results"]
    assert len(top) == 2 and [x["document"] for x in top] == [{"text": DOCS[x["index"]]} for x in top]
    long = httpx.post(server + "/v1/rerank", json={"query": "word " * 300, "documents": ["x"]}, timeout=30)
    assert long.status_code == 400 and long.json()["error"]["code"] == "context_length_exceeded", long.text
    assert httpx.get(server + "/v1/models").json()["data"][0]["capabilities"] == ["rerank"]
