"""logprobs through a real server and the `openai` client, against an independent computation: llama-cpp-python's
own `Llama(logits_all=True)` evaluating the same prompt (its log-softmax of its own logits), on the trained
demo-think model. Chat and completions, whole and streamed. Tolerance: 1e-4 absolute (both are llama.cpp
float32 logits; ours are normalised in float64, its in float32)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from testkit.servers import running_server

pytestmark = pytest.mark.slow
TOL = 1e-4
QUESTION = "What is the capital of France?"
PROMPT = f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"  # demo-think's template, rendered
N, TOP = 12, 3


@pytest.fixture(scope="module")
def setup(demo_gguf: Any) -> Iterator[tuple[openai.OpenAI, Any]]:
    from llama_cpp import Llama

    path = str(demo_gguf("demo-think"))
    oracle = Llama(path, n_ctx=512, logits_all=True, verbose=False, n_threads=1)
    with running_server("--model-path", path, "--alias", "demo") as url:
        yield openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0), oracle


def same_token(ours: str, theirs: str) -> bool:
    return ours == theirs or theirs == ""  # llama-cpp-python prints special tokens (here <think>) as ""


def test_completions_logprobs_match_llama_cpp_python(setup: tuple[openai.OpenAI, Any]) -> None:
    client, oracle = setup
    want = oracle.create_completion(PROMPT, max_tokens=N, temperature=0, logprobs=TOP)["choices"][0]["logprobs"]
    whole = client.completions.create(model="demo", prompt=PROMPT, max_tokens=N, temperature=0, logprobs=TOP)
    got = whole.choices[0].logprobs
    chunks = [
        c.choices[0].logprobs
        for c in client.completions.create(
            model="demo", prompt=PROMPT, max_tokens=N, temperature=0, logprobs=TOP, stream=True
        )
        if c.choices
    ]
    streamed = {
        k: [v for c in chunks if c for v in getattr(c, k)]
        for k in ("tokens", "token_logprobs", "top_logprobs", "text_offset")
    }
    for block in (got.model_dump(), streamed):
        assert len(block["tokens"]) == N
        assert all(same_token(a, b) for a, b in zip(block["tokens"], want["tokens"], strict=True))
        assert block["token_logprobs"] == pytest.approx([float(x) for x in want["token_logprobs"]], abs=TOL)
        for ours, theirs in zip(block["top_logprobs"], want["top_logprobs"], strict=True):
            # ours: the top 3 plus the sampled token (greedy: one of them), as OpenAI documents
            assert sorted(ours.values()) == pytest.approx(sorted(float(v) for v in theirs.values()), abs=TOL)
        assert block["text_offset"][0] == len(PROMPT)
        assert block["text_offset"] == sorted(block["text_offset"])


def test_chat_logprobs_match_llama_cpp_python(setup: tuple[openai.OpenAI, Any]) -> None:
    client, oracle = setup
    messages = [{"role": "user", "content": QUESTION}]
    want = oracle.create_chat_completion(messages, max_tokens=N, temperature=0, logprobs=True, top_logprobs=TOP)[
        "choices"
    ][0]["logprobs"]["content"]
    whole = client.chat.completions.create(
        model="demo",
        messages=messages,
        max_tokens=N,
        temperature=0,
        logprobs=True,
        top_logprobs=TOP,
    )
    content = whole.choices[0].logprobs.content
    streamed = [
        e
        for c in client.chat.completions.create(
            model="demo",
            messages=messages,
            max_tokens=N,
            temperature=0,
            logprobs=True,
            top_logprobs=TOP,
            stream=True,
        )
        if c.choices and c.choices[0].logprobs
        for e in c.choices[0].logprobs.content
    ]
    for entries in (content, streamed):
        assert len(entries) == N == len(want)
        for ours, theirs in zip(entries, want, strict=True):
            assert same_token(ours.token, theirs["token"])
            assert bytes(ours.bytes).decode() == ours.token
            assert ours.logprob == pytest.approx(float(theirs["logprob"]), abs=TOL)
            assert [t.logprob for t in ours.top_logprobs] == pytest.approx(
                [float(t["logprob"]) for t in theirs["top_logprobs"]], abs=TOL
            )
            assert ours.top_logprobs[0].logprob >= ours.logprob - TOL  # greedy took the best
    plain = client.chat.completions.create(model="demo", messages=messages, max_tokens=2)
    assert plain.choices[0].logprobs is None


def test_bad_logprob_requests_are_400(setup: tuple[openai.OpenAI, Any]) -> None:
    client, _ = setup
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "x"}], top_logprobs=3)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="demo",
            messages=[{"role": "user", "content": "x"}],
            logprobs=True,
            top_logprobs=21,
        )
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="demo", prompt="x", logprobs=6)
