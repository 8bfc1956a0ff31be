"""smolagents: a `ToolCallingAgent` with a `@tool` on `OpenAIServerModel` (no structured-output path of its own)."""

from __future__ import annotations

from collections.abc import Callable

from _common import main
from smolagents import OpenAIServerModel, ToolCallingAgent, tool


def tool_loop(model: str, base: str, question: str, get_weather: Callable[[str], str]) -> str:
    agent = ToolCallingAgent(
        tools=[tool(get_weather)],
        model=OpenAIServerModel(model_id=model, api_base=base + "/v1", api_key="none", temperature=0),
        max_steps=3,
        verbosity_level=0,
    )
    return str(agent.run(question))


if __name__ == "__main__":
    main(tool_loop, None)
