"""The prompt cache through real servers and the `openai` client, on both demo models: a conversation whose
history only grows reports cached prompt tokens on turns 2 and 3 (whole and streamed usage), answers exactly as a
fresh server does at temperature 0, `cache_prompt: false` turns reuse off, and /metrics counts both."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from testkit.servers import running_server
from tests.serve.promtext import sample

pytestmark = pytest.mark.slow
QUESTIONS = ["What is the capital of France?", "What is 7 + 5?", "What is the capital of Japan?"]
ARGS = ("--alias", "demo", "--max-concurrent", "2", "--ctx-size", "1024")


@pytest.fixture(scope="module", params=["demo-think", "demo-harmony"])
def demo(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    try:
        demo_gguf = request.getfixturevalue("demo_gguf")
    except pytest.FixtureLookupError:
        pytest.skip("the demo_gguf fixture (tests/conftest.py) is not there")
    path = str(demo_gguf(request.param))
    with running_server("--model-path", path, *ARGS) as url:
        yield path, url


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)


def ask(c: openai.OpenAI, messages: list[dict[str, str]], **kw: Any) -> Any:
    return c.chat.completions.create(model="demo", messages=messages, max_tokens=120, temperature=0, **kw)


def streamed(c: openai.OpenAI, messages: list[dict[str, str]], **kw: Any) -> tuple[str, Any]:
    text, usage = "", None
    for chunk in ask(c, messages, stream=True, stream_options={"include_usage": True}, **kw):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage:
            usage = chunk.usage
    return text, usage


def conversation(c: openai.OpenAI, stream: bool) -> tuple[list[dict[str, str]], list[Any]]:
    """Three turns, each resending the whole history (plain string contents)."""
    messages: list[dict[str, str]] = []
    usages = []
    for q in QUESTIONS:
        messages.append({"role": "user", "content": q})
        if stream:
            answer, usage = streamed(c, messages)
        else:
            r = ask(c, messages)
            answer, usage = r.choices[0].message.content, r.usage
        usages.append(usage)
        messages.append({"role": "assistant", "content": answer})
    return messages, usages


def metric(url: str, name: str) -> float:
    value = sample(httpx.get(url + "/metrics").text, name)
    assert value is not None, name
    return value


def test_growing_history_hits_the_cache_and_answers_as_a_fresh_server(demo: tuple[str, str]) -> None:
    path, url = demo
    c = client(url)
    prompt_before = metric(url, "hearth_prompt_tokens_total")
    cached_before = metric(url, "hearth_prompt_tokens_cached_total")
    for stream in (False, True):
        messages, usages = conversation(c, stream)
        assert usages[0].prompt_tokens_details.cached_tokens < usages[0].prompt_tokens
        for before, after in itertools.pairwise(usages):
            # at least the earlier turn's prompt: its answer re-renders differently (thinking dropped)
            assert after.prompt_tokens_details.cached_tokens >= before.prompt_tokens - 1
            assert after.prompt_tokens_details.cached_tokens < after.prompt_tokens
    last = messages[:-1]
    hot = ask(c, last)
    assert hot.usage.prompt_tokens_details.cached_tokens == hot.usage.prompt_tokens - 1  # asked before
    with running_server("--model-path", path, *ARGS) as fresh:
        cold = ask(client(fresh), last)
        assert cold.usage.prompt_tokens_details.cached_tokens == 0
    assert hot.choices[0].message.content == cold.choices[0].message.content == messages[-1]["content"]
    assert hot.choices[0].message.model_extra.get("reasoning_content") == cold.choices[0].message.model_extra.get(
        "reasoning_content"
    )
    off = ask(c, last, extra_body={"cache_prompt": False})
    assert off.usage.prompt_tokens_details.cached_tokens == 0
    assert off.choices[0].message.content == cold.choices[0].message.content
    # /metrics: 2 conversations of 3 turns, then 2 more requests here
    assert metric(url, "hearth_prompt_tokens_total") - prompt_before >= 8 * usages[0].prompt_tokens
    assert (
        metric(url, "hearth_prompt_tokens_cached_total") - cached_before
        >= sum(u.prompt_tokens_details.cached_tokens for u in usages) + hot.usage.prompt_tokens_details.cached_tokens
    )


def test_completions_report_cached_tokens(demo: tuple[str, str]) -> None:
    _, url = demo
    c = client(url)
    prompt = "The capital of France is " * 8
    first = c.completions.create(model="demo", prompt=prompt, max_tokens=4, temperature=0)
    again = c.completions.create(model="demo", prompt=prompt, max_tokens=4, temperature=0)
    assert again.usage.prompt_tokens_details.cached_tokens == again.usage.prompt_tokens - 1
    assert again.choices[0].text == first.choices[0].text
    chunks = list(
        c.completions.create(
            model="demo",
            prompt=prompt,
            max_tokens=4,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    usage = next(ch.usage for ch in chunks if ch.usage)
    assert usage.prompt_tokens_details.cached_tokens == usage.prompt_tokens - 1
