"""pydantic-ai: an `Agent` with a plain tool function; `output_type=` a pydantic model (its default tool output)."""

from __future__ import annotations

from collections.abc import Callable

from _common import CAPITAL_QUESTION, Capital, main
from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider


def chat_model(model: str, base: str) -> OpenAIChatModel:
    return OpenAIChatModel(model, provider=OpenAIProvider(base_url=base + "/v1", api_key="none"))


def tool_loop(model: str, base: str, question: str, get_weather: Callable[[str], str]) -> str:
    agent = Agent(chat_model(model, base), tools=[get_weather], model_settings={"temperature": 0})
    return agent.run_sync(question).output


def structured(model: str, base: str, seed: int) -> Capital:
    agent = Agent(chat_model(model, base), output_type=Capital, model_settings={"temperature": 1.0, "seed": seed})
    return agent.run_sync(CAPITAL_QUESTION).output


if __name__ == "__main__":
    main(tool_loop, structured)
