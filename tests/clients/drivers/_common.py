"""What every driver shares: the command line, the weather tool as a user writes it, the structured-output model.

Drivers run in the library's own interpreter (the shared venv, or .cache/clients/NAME for a library whose pins clash
with ours), so they import nothing from hearth: only the library, pydantic and this file (beside them on sys.path).

    python DRIVER.py tool MODEL BASE_URL CITY RESULT   -> {"answer": str, "calls": [city, ...]}
    python DRIVER.py json MODEL BASE_URL SEED [SEED...] -> {"answers": [{"seed", "value" | "error"}]}

BASE_URL is the router's root (no /v1). A failure of the library itself is a traceback and a nonzero exit."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

CAPITAL_QUESTION = "What is the capital of France?"


class Capital(BaseModel):
    # Bounded strings, as a user bounds them: the grammar then closes a string even when the sampled text wanders.
    # The Anthropic SDK strips maxLength (its structured outputs take none); there the demo models close the strings
    # themselves, having learned this object (models/demo/data.py JSON_CASES).
    country: str = Field(max_length=24)
    city: str = Field(max_length=24)


def weather_question(city: str) -> str:
    return f"What is the weather in {city}?"


# The tool as each library's documentation writes one: a typed function with a Google-style docstring.
WEATHER_DOC = """Get the current weather in a city.

    Args:
        city: The city name.
    """

# The same tool as a hand-written OpenAI tool object (the SDKs that take a dict): the trained shape.
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city name."}},
            "required": ["city"],
        },
    },
}


def weather_tool(result: str, calls: list[str]) -> Callable[[str], str]:
    def get_weather(city: str) -> str:
        calls.append(city)
        return result

    get_weather.__doc__ = WEATHER_DOC
    get_weather.result = result  # for a driver whose tool runs in another process (the llm CLI)
    return get_weather


def main(
    tool_loop: Callable[[str, str, str, Callable[[str], str]], str] | None,
    structured: Callable[[str, str, int], Capital | dict[str, Any]] | None,
) -> None:
    """tool_loop(model, base, question, get_weather) -> final answer; structured(model, base, seed) -> the value."""
    case, model, base, *rest = sys.argv[1:]
    if case == "tool":
        assert tool_loop is not None, "this library has no tool loop"
        city, result = rest
        calls: list[str] = []
        answer = tool_loop(model, base, weather_question(city), weather_tool(result, calls))
        print(json.dumps({"answer": answer, "calls": calls}))
    elif case == "json":
        assert structured is not None, "this library has no structured-output path"
        answers = []
        for seed in map(int, rest):
            try:
                value = structured(model, base, seed)
                answers.append({"seed": seed, "value": value.model_dump() if isinstance(value, BaseModel) else value})
            except Exception as e:  # noqa: BLE001 - each seed's failure is reported, the others still run
                answers.append({"seed": seed, "error": f"{type(e).__name__}: {e}"[:500]})
        print(json.dumps({"answers": answers}))
    else:
        raise SystemExit(f"unknown case {case!r}")
