"""ollama (the official client, /api/chat): a Python function as the tool and the usual message loop;
`format=` a pydantic model's JSON schema for structured output."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ollama
from _common import CAPITAL_QUESTION, Capital, main


def tool_loop(model: str, base: str, question: str, get_weather: Callable[[str], str]) -> str:
    c = ollama.Client(host=base)
    messages: list[Any] = [{"role": "user", "content": question}]
    for _ in range(4):
        reply = c.chat(model=model, messages=messages, tools=[get_weather], options={"temperature": 0})
        messages.append(reply.message)
        if not reply.message.tool_calls:
            return reply.message.content or ""
        for call in reply.message.tool_calls:
            result = get_weather(**call.function.arguments)
            messages.append({"role": "tool", "content": result, "tool_name": call.function.name})
    raise RuntimeError("no answer after 4 turns")


def structured(model: str, base: str, seed: int) -> Capital:
    reply = ollama.Client(host=base).chat(
        model=model,
        messages=[{"role": "user", "content": CAPITAL_QUESTION}],
        format=Capital.model_json_schema(),
        options={"temperature": 1.0, "seed": seed},
    )
    return Capital.model_validate_json(reply.message.content or "")


if __name__ == "__main__":
    main(tool_loop, structured)
