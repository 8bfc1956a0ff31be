"""langchain-openai: `ChatOpenAI.bind_tools` with a `@tool` and the usual message loop; `with_structured_output`."""

from __future__ import annotations

from collections.abc import Callable

from _common import CAPITAL_QUESTION, Capital, main
from langchain_core.messages import BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI


def chat(model: str, base: str, **kw: object) -> ChatOpenAI:
    return ChatOpenAI(model=model, base_url=base + "/v1", api_key="none", max_retries=0, **kw)


def tool_loop(model: str, base: str, question: str, get_weather: Callable[[str], str]) -> str:
    weather = tool(get_weather)
    bound = chat(model, base, temperature=0).bind_tools([weather])
    messages: list[BaseMessage] = [HumanMessage(question)]
    for _ in range(4):
        reply = bound.invoke(messages)
        messages.append(reply)
        if not reply.tool_calls:
            return str(reply.content)
        for call in reply.tool_calls:
            messages.append(ToolMessage(weather.invoke(call["args"]), tool_call_id=call["id"]))
    raise RuntimeError("no answer after 4 turns")


def structured(model: str, base: str, seed: int) -> Capital:
    out = chat(model, base, temperature=1.0, seed=seed).with_structured_output(Capital).invoke(CAPITAL_QUESTION)
    assert isinstance(out, Capital), out
    return out


if __name__ == "__main__":
    main(tool_loop, structured)
