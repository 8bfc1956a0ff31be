"""litellm: `completion` on an `openai/` model with a hand-written tool loop; `response_format=` a pydantic model."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import litellm
from _common import CAPITAL_QUESTION, WEATHER_TOOL, Capital, main


def tool_loop(model: str, base: str, question: str, get_weather: Callable[[str], str]) -> str:
    messages: list[Any] = [{"role": "user", "content": question}]
    for _ in range(4):
        reply = litellm.completion(
            model="openai/" + model,
            api_base=base + "/v1",
            api_key="none",
            messages=messages,
            tools=[WEATHER_TOOL],
            temperature=0,
        )
        message = reply.choices[0].message
        if not message.tool_calls:
            return message.content or ""
        messages.append(message.model_dump(exclude_none=True))
        for call in message.tool_calls:
            result = get_weather(**json.loads(call.function.arguments))
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    raise RuntimeError("no answer after 4 turns")


def structured(model: str, base: str, seed: int) -> Capital:
    reply = litellm.completion(
        model="openai/" + model,
        api_base=base + "/v1",
        api_key="none",
        messages=[{"role": "user", "content": CAPITAL_QUESTION}],
        response_format=Capital,
        temperature=1.0,
        seed=seed,
    )
    return Capital.model_validate_json(reply.choices[0].message.content)


if __name__ == "__main__":
    main(tool_loop, structured)
