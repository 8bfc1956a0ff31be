"""anthropic: `beta.messages.tool_runner` with a `@beta_tool` function; `messages.parse(output_format=...)`."""

from __future__ import annotations

from collections.abc import Callable

import anthropic
from _common import CAPITAL_QUESTION, Capital, main


def client(base: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=base, api_key="none", max_retries=0)


def tool_loop(model: str, base: str, question: str, get_weather: Callable[[str], str]) -> str:
    runner = client(base).beta.messages.tool_runner(
        model=model,
        max_tokens=300,
        messages=[{"role": "user", "content": question}],
        tools=[anthropic.beta_tool(get_weather)],
        extra_body={"temperature": 0},
    )
    final = runner.until_done()
    return "".join(b.text for b in final.content if b.type == "text")


def structured(model: str, base: str, seed: int) -> Capital:
    reply = client(base).messages.parse(
        model=model,
        max_tokens=300,
        messages=[{"role": "user", "content": CAPITAL_QUESTION}],
        output_format=Capital,
        extra_body={"temperature": 1.0, "seed": seed},
    )
    assert reply.parsed_output is not None, f"no parsed value: {reply.content!r}"
    return reply.parsed_output


if __name__ == "__main__":
    main(tool_loop, structured)
