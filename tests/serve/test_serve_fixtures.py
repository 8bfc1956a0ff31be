"""Serving HuggingFace folders: the tiny fixture checkpoints (qwen3 with <think>, gpt-oss with harmony) are
converted once into the cache and served. Their weights are random, so their text is arbitrary, often malformed
harmony: exactly the case where no marker may leak into content or thinking."""

from __future__ import annotations

import re
from collections.abc import Iterator

import openai
import pytest

from testkit.servers import running_server

pytestmark = pytest.mark.slow
MARKER = re.compile(r"<\|(start|channel|message|end|return|call|constrain)\|>|</?think>")


@pytest.fixture(scope="module", params=["qwen3", "gpt-oss"])
def served(request: pytest.FixtureRequest) -> Iterator[tuple[str, openai.OpenAI]]:
    from testkit.fixtures.build import build_fixture

    folder = build_fixture(request.param)
    with running_server("--model-path", str(folder), "--max-concurrent", "2", "--ctx-size", "1024", timeout=180) as url:
        yield request.param, openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)


def test_folder_is_served_and_nothing_leaks(served: tuple[str, openai.OpenAI]) -> None:
    arch, client = served
    model = client.models.list().data[0].id
    assert model.startswith(arch)  # named after the folder
    for seed in range(4):
        kw = dict(
            model=model,
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=48,
            temperature=1.0,
            seed=seed,
        )
        whole = client.chat.completions.create(**kw)
        message = whole.choices[0].message
        texts = [message.content or "", getattr(message, "reasoning_content", None) or ""]
        for channel_text in (getattr(message, "channels", None) or {}).values():
            texts.append(channel_text)
        assert not any(MARKER.search(t) for t in texts), texts
        chunks = list(client.chat.completions.create(**kw, stream=True))
        streamed = "".join((c.choices[0].delta.content or "") for c in chunks if c.choices)
        thinking = "".join((getattr(c.choices[0].delta, "reasoning_content", None) or "") for c in chunks if c.choices)
        assert not MARKER.search(streamed) and not MARKER.search(thinking)
        assert streamed.strip() == (message.content or "").strip()
        assert thinking.strip() == (getattr(message, "reasoning_content", None) or "").replace(
            "\n\n", ""
        ).strip() or "commentary" in (getattr(message, "channels", None) or {})
