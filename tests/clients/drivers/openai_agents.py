"""openai-agents: an `Agent` with a `function_tool` run by `Runner`; `output_type` for structured output."""

from __future__ import annotations

from collections.abc import Callable

from _common import CAPITAL_QUESTION, Capital, main
from agents import Agent, ModelSettings, OpenAIChatCompletionsModel, Runner, function_tool, set_tracing_disabled
from openai import AsyncOpenAI

set_tracing_disabled(True)  # its traces go to OpenAI's servers


def chat_model(model: str, base: str) -> OpenAIChatCompletionsModel:
    return OpenAIChatCompletionsModel(model, AsyncOpenAI(base_url=base + "/v1", api_key="none", max_retries=0))


def tool_loop(model: str, base: str, question: str, get_weather: Callable[[str], str]) -> str:
    agent = Agent(
        name="weather",
        model=chat_model(model, base),
        tools=[function_tool(get_weather)],
        model_settings=ModelSettings(temperature=0),
    )
    return str(Runner.run_sync(agent, question, max_turns=4).final_output)


def structured(model: str, base: str, seed: int) -> Capital:
    agent = Agent(
        name="capitals",
        model=chat_model(model, base),
        output_type=Capital,
        model_settings=ModelSettings(temperature=1.0, extra_args={"seed": seed}),
    )
    out = Runner.run_sync(agent, CAPITAL_QUESTION, max_turns=2).final_output
    assert isinstance(out, Capital), out
    return out


if __name__ == "__main__":
    main(tool_loop, structured)
