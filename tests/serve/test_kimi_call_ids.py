"""Kimi K2's call ids: its templates name each call `functions.NAME:N`, N counting the conversation's calls, and
each tool result by the id of the call it answers. Calls parsed from a Kimi model's output carry those ids, the
count going on from the request's history, so a client that sends the conversation back gets the prompt
transformers renders from the same conversation with Kimi's own ids (the oracle), and each API shows them."""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("transformers")

from serve.chat.channels import ChannelParser, Thinking
from serve.chat.core import ChatResult, Generation, history_calls
from serve.chat.schemas import ChatRequest
from serve.chat.tools.formats import ToolFormat
from tests.serve.test_tool_prompts import TOOLS, _shipped, hf_tools, ours, template_of, theirs

NAME = "moonshotai-Kimi-K2.jinja"  # the Kimi template transformers renders with calls (tool_templates.SHIPPED)


def kimi_text(calls: list[tuple[str, dict[str, Any]]], written: int) -> str:
    """A Kimi answer calling `calls`, numbered from `written` (the model's own numbers: a grammar lets it write any)."""
    body = "".join(
        f"<|tool_call_begin|>functions.{name}:{written + i}<|tool_call_argument_begin|>{json.dumps(args)}"
        "<|tool_call_end|>"
        for i, (name, args) in enumerate(calls)
    )
    return f"<|tool_calls_section_begin|>{body}<|tool_calls_section_end|>"


def answer(messages: list[dict[str, Any]], output: str) -> dict[str, Any]:
    """The assistant message a client gets for `output` after `messages` (the chat path as `prepare` builds it),
    as it sends it back: OpenAI's shape, arguments as JSON text."""
    before = history_calls(ChatRequest.model_validate({"messages": messages}).messages)
    gen = Generation(ChannelParser.for_output(template_of(source()).format, Thinking.NONE), ToolFormat.KIMI,
                     tools=hf_tools(TOOLS), calls_before=before)  # fmt: skip
    result = ChatResult()
    third = len(output) // 3
    pieces = (output[:third], output[third : 2 * third], output[2 * third :])  # as streamed, in pieces
    for event in [e for p in pieces for e in gen.piece(p)] + gen.end("stop", 1, 1):
        result.add(event)
    calls = [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in result.calls
    ]
    return {"role": "assistant", "content": result.text("final") or None, "tool_calls": calls}


def source() -> str:
    return (_shipped() / NAME).read_text()


# The two turns as Kimi's own serving would send them back
KIMIS = [
    {"role": "user", "content": "Weather in Paris and Oslo?"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"id": "functions.get_weather:0", "type": "function",
         "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
        {"id": "functions.get_weather:1", "type": "function",
         "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}},
    ]},
    {"role": "tool", "tool_call_id": "functions.get_weather:0", "content": "sunny, 21 C"},
    {"role": "tool", "tool_call_id": "functions.get_weather:1", "content": "rainy, 9 C"},
    {"role": "assistant", "content": "Paris is sunny, Oslo rainy."},
    {"role": "user", "content": "And the time?"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"id": "functions.get_time:2", "type": "function", "function": {"name": "get_time", "arguments": {}}},
    ]},
    {"role": "tool", "tool_call_id": "functions.get_time:2", "content": "12:00"},
]  # fmt: skip


@pytest.mark.parametrize("written", [0, 7])
def test_ids_sent_back_render_as_kimis_own(written: int) -> None:
    """Two turns: two parallel calls, then one more; whatever numbers the model writes, the ids are the
    conversation's count (0, 1, then 2), and the prompt of the conversation sent back with them is transformers'
    prompt of the same conversation with Kimi's ids."""
    sent: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Paris and Oslo?"}]
    first = answer(sent, kimi_text([("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Oslo"})], written))
    sent += [
        first,
        {"role": "tool", "tool_call_id": first["tool_calls"][0]["id"], "content": "sunny, 21 C"},
        {"role": "tool", "tool_call_id": first["tool_calls"][1]["id"], "content": "rainy, 9 C"},
        {"role": "assistant", "content": "Paris is sunny, Oslo rainy."},
        {"role": "user", "content": "And the time?"},
    ]
    second = answer(sent, kimi_text([("get_time", {})], written))
    sent += [second, {"role": "tool", "tool_call_id": second["tool_calls"][0]["id"], "content": "12:00"}]
    ids = [c["id"] for m in (first, second) for c in m["tool_calls"]]
    assert ids == ["functions.get_weather:0", "functions.get_weather:1", "functions.get_time:2"]

    got = ours(template_of(source()), {"messages": sent, "tools": TOOLS})
    assert got == theirs(source(), KIMIS, hf_tools(TOOLS))
    assert "## Return of functions.get_time:2" in got


CLOCK = {"type": "function", "function": {"name": "get_time", "description": "The time now.", "parameters": {}}}
# a history of three calls, in each API's shape
CHAT_HISTORY = [
    {"role": "user", "content": "Weather in Paris and Oslo?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": f"functions.get_weather:{i}", "type": "function",
         "function": {"name": "get_weather", "arguments": json.dumps({"city": c})}}
        for i, c in enumerate(("Paris", "Oslo"))
    ]},
    {"role": "tool", "tool_call_id": "functions.get_weather:0", "content": "sunny"},
    {"role": "tool", "tool_call_id": "functions.get_weather:1", "content": "rainy"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "functions.get_time:2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
    ]},
    {"role": "tool", "tool_call_id": "functions.get_time:2", "content": "12:00"},
    {"role": "user", "content": "And now?"},
]  # fmt: skip
MESSAGES_HISTORY = [
    {"role": "user", "content": "Weather in Paris and Oslo?"},
    {"role": "assistant", "content": [
        {"type": "tool_use", "id": f"functions.get_weather:{i}", "name": "get_weather", "input": {"city": c}}
        for i, c in enumerate(("Paris", "Oslo"))
    ]},
    {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "functions.get_weather:0", "content": "sunny"},
        {"type": "tool_result", "tool_use_id": "functions.get_weather:1", "content": "rainy"},
    ]},
    {"role": "assistant", "content": [{"type": "tool_use", "id": "functions.get_time:2", "name": "get_time", "input": {}}]},
    {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "functions.get_time:2", "content": "12:00"},
        {"type": "text", "text": "And now?"},
    ]},
]  # fmt: skip
RESPONSES_HISTORY = [
    {"role": "user", "content": "Weather in Paris and Oslo?"},
    *({"type": "function_call", "call_id": f"functions.get_weather:{i}", "name": "get_weather",
       "arguments": json.dumps({"city": c})} for i, c in enumerate(("Paris", "Oslo"))),
    {"type": "function_call_output", "call_id": "functions.get_weather:0", "output": "sunny"},
    {"type": "function_call_output", "call_id": "functions.get_weather:1", "output": "rainy"},
    {"type": "function_call", "call_id": "functions.get_time:2", "name": "get_time", "arguments": "{}"},
    {"type": "function_call_output", "call_id": "functions.get_time:2", "output": "12:00"},
    {"role": "user", "content": "And now?"},
]  # fmt: skip


def _sse_json(body: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ") and line != "data: [DONE]"]


def test_each_api_shows_the_ids_counting_on_from_the_history() -> None:
    """Served (a tiny random model carrying Kimi's template; a forced call, so the grammar writes Kimi's markup; room for
    the random digits of the number the model writes, which the grammar leaves open):
    after a history of three calls the next call is `functions.get_time:3` in chat completions whole and streamed,
    in Anthropic's tool_use block and in a Responses function_call."""
    import asyncio

    from serve.app import create_app
    from serve.config import ServeConfig
    from testkit.app_client import healthy
    from testkit.tiny_gguf import build_tiny_gguf

    want = "functions.get_time:3"
    tools = [*TOOLS[:1], CLOCK]
    chat = {
        "model": "tiny",
        "messages": CHAT_HISTORY,
        "tools": tools,
        "max_tokens": 2000,
        "temperature": 0,
        "seed": 1,
        "tool_choice": {"type": "function", "function": {"name": "get_time"}},
        "parallel_tool_calls": False,
    }
    anthropic_tools = [
        {
            "name": t["function"]["name"],
            "description": t["function"]["description"],
            "input_schema": t["function"]["parameters"] or {"type": "object"},
        }
        for t in tools
    ]
    messages = {
        "model": "tiny",
        "messages": MESSAGES_HISTORY,
        "tools": anthropic_tools,
        "max_tokens": 2000,
        "temperature": 0,
        "tool_choice": {"type": "tool", "name": "get_time", "disable_parallel_tool_use": True},
    }
    responses = {"model": "tiny", "input": RESPONSES_HISTORY, "max_output_tokens": 2000, "temperature": 0, "parallel_tool_calls": False,
                 "tools": [{"type": "function", **t["function"]} for t in tools],
                 "tool_choice": {"type": "function", "name": "get_time"}}  # fmt: skip

    async def run() -> None:
        app = create_app(ServeConfig(model_path=build_tiny_gguf(template=source()), model_name="tiny", ctx_size=8192))
        async with app.test_app() as test_app:
            client = test_app.test_client()
            await healthy(client)
            r = await client.post("/v1/chat/completions", json=chat)
            body = await r.get_json()
            assert r.status_code == 200, body
            assert [c["id"] for c in body["choices"][0]["message"].get("tool_calls") or ()] == [want], body
            r = await client.post("/v1/chat/completions", json={**chat, "stream": True})
            chunks = _sse_json((await r.get_data()).decode())
            deltas = [c for ch in chunks for c in (ch["choices"][0]["delta"].get("tool_calls") or []) if ch["choices"]]
            assert [d["id"] for d in deltas if d.get("id")] == [want], chunks[-2:]
            r = await client.post("/v1/messages", json=messages)
            body = await r.get_json()
            assert r.status_code == 200, body
            assert [b["id"] for b in body["content"] if b["type"] == "tool_use"] == [want], body
            r = await client.post("/v1/responses", json=responses)
            body = await r.get_json()
            assert r.status_code == 200, body
            assert [o["call_id"] for o in body["output"] if o["type"] == "function_call"] == [want], body

    asyncio.run(run())


def test_ollama_history_without_ids_gets_kimis_ids() -> None:
    """Ollama's clients send calls without ids and results by tool name: the ids they get are the ones Kimi's
    template numbers the conversation's calls with, so the prompt is transformers' with Kimi's own ids."""
    from serve.api.ollama import chat_messages
    from serve.api.ollama_schemas import ChatBody
    from serve.chat.tools.formats import FORMATS

    template = template_of(source())
    assert template.tool_support.format is ToolFormat.KIMI

    def calls(*named: tuple[str, dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"function": {"name": name, "arguments": args}} for name, args in named]

    body = ChatBody.model_validate({"model": "m", "messages": [
        {"role": "user", "content": "Weather in Paris and Oslo?"},
        {"role": "assistant", "content": "", "tool_calls": calls(("get_weather", {"city": "Paris"}),
                                                                 ("get_weather", {"city": "Oslo"}))},
        {"role": "tool", "tool_name": "get_weather", "content": "sunny, 21 C"},
        {"role": "tool", "tool_name": "get_weather", "content": "rainy, 9 C"},
        {"role": "assistant", "content": "Paris is sunny, Oslo rainy."},
        {"role": "user", "content": "And the time?"},
        {"role": "assistant", "content": "", "tool_calls": calls(("get_time", {}))},
        {"role": "tool", "tool_name": "get_time", "content": "12:00"},
    ]})  # fmt: skip
    messages = chat_messages(body.messages, FORMATS[template.tool_support.format].named_id)
    got = ours(template, {"messages": messages, "tools": TOOLS})
    assert got == theirs(source(), KIMIS, hf_tools(TOOLS))
    # a format without ids of its own keeps the short placeholder every template takes
    assert chat_messages(body.messages)[1]["tool_calls"][0]["id"] != "functions.get_weather:0"
