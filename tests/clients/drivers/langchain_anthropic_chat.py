"""langchain-anthropic: `ChatAnthropic.bind_tools` with a `@tool` and the usual message loop; `with_structured_output`."""

from __future__ import annotations

from collections.abc import Callable

from _common import CAPITAL_QUESTION, Capital, main
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool


def chat(model: str, base: str, **kw: object) -> ChatAnthropic:
    return ChatAnthropic(model=model, base_url=base, api_key="none", max_retries=0, max_tokens=300, **kw)


def tool_loop(model: str, base: str, question: str, get_weather: Callable[[str], str]) -> str:
    weather = tool(get_weather)
    bound = chat(model, base, temperature=0).bind_tools([weather])
    messages: list[BaseMessage] = [HumanMessage(question)]
    for _ in range(4):
        reply = bound.invoke(messages)
        messages.append(reply)
        if not reply.tool_calls:
            return reply.text if isinstance(reply.text, str) else reply.text()
        for call in reply.tool_calls:
            messages.append(ToolMessage(weather.invoke(call["args"]), tool_call_id=call["id"]))
    raise RuntimeError("no answer after 4 turns")


def structured(model: str, base: str, seed: int) -> Capital:
    # Anthropic's API has no seed; temperature 1 samples, and each run is its own draw
    out = chat(model, base, temperature=1.0).with_structured_output(Capital).invoke(CAPITAL_QUESTION)
    assert isinstance(out, Capital), out
    return out


if __name__ == "__main__":
    main(tool_loop, structured)
