"""openai: a hand-written chat-completions tool loop; `chat.completions.parse` with a pydantic model."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from _common import CAPITAL_QUESTION, WEATHER_TOOL, Capital, main
from openai import OpenAI


def client(base: str) -> OpenAI:
    return OpenAI(base_url=base + "/v1", api_key="none", max_retries=0)


def tool_loop(model: str, base: str, question: str, get_weather: Callable[[str], str]) -> str:
    c = client(base)
    messages: list[Any] = [{"role": "user", "content": question}]
    for _ in range(4):
        reply = c.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL], temperature=0)
        message = reply.choices[0].message
        if not message.tool_calls:
            return message.content or ""
        messages.append(message.model_dump(exclude_none=True))
        for call in message.tool_calls:
            result = get_weather(**json.loads(call.function.arguments))
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    raise RuntimeError("no answer after 4 turns")


def structured(model: str, base: str, seed: int) -> Capital:
    reply = client(base).chat.completions.parse(
        model=model,
        messages=[{"role": "user", "content": CAPITAL_QUESTION}],
        response_format=Capital,
        temperature=1.0,
        seed=seed,
    )
    parsed = reply.choices[0].message.parsed
    assert parsed is not None, f"no parsed value: {reply.choices[0].message.content!r}"
    return parsed


if __name__ == "__main__":
    main(tool_loop, structured)
