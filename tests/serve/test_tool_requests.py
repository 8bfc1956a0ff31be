"""Tool requests through the app (Quart's test client, the tiny random GGUF): every bad input is a 400 whose
`param` names the field, never a 500; a well-formed request with tool_choice required comes back as calls,
held by the grammar even on random weights."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from serve.app import create_app
from serve.config import ServeConfig
from testkit.app_client import healthy
from testkit.tiny_gguf import build_tiny_gguf

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 8}},
            "required": ["city"],
        },
    },
}
USER = {"role": "user", "content": "hi"}
CALL = {
    "role": "assistant",
    "content": None,
    "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}],
}


def with_args(arguments: str) -> dict[str, Any]:
    return {
        **CALL,
        "tool_calls": [{**CALL["tool_calls"][0], "function": {"name": "get_weather", "arguments": arguments}}],
    }


BAD: list[tuple[dict[str, Any], str]] = [
    ({"tools": [{"type": "retrieval", "function": {"name": "x"}}]}, "tools.0.type"),
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools.0.function.name"),
    ({"tools": [{"type": "function"}]}, "tools.0.function"),
    ({"tools": [WEATHER, WEATHER]}, "tools.1.function.name"),
    (
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]},
        "tools.0.function.parameters",
    ),
    (
        {
            "tools": [
                {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": [1]}}}
            ]
        },
        "tools.0.function.parameters",
    ),
    (
        {
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "f",
                        "parameters": {"type": "object", "properties": {"a": {"type": "frobnicate"}}},
                    },
                }
            ]
        },
        "tools.0.function.parameters",
    ),
    (
        {
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "f",
                        "parameters": {"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}},
                    },
                }
            ]
        },
        "tools.0.function.parameters",
    ),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [WEATHER], "response_format": {"type": "json_object"}}, "response_format"),
    ({"messages": [USER, {"role": "tool", "tool_call_id": "call_9", "content": "x"}]}, "messages.1.tool_call_id"),
    ({"messages": [USER, {"role": "tool", "content": "x"}]}, "messages.1"),
    ({"messages": [USER, with_args("{'city': 'Paris'}")]}, "messages.1.tool_calls.0.function.arguments"),
    ({"messages": [USER, with_args('{"city": "Par')]}, "messages.1.tool_calls.0.function.arguments"),
    ({"messages": [{**USER, "tool_calls": CALL["tool_calls"]}]}, "messages.0"),
    (
        {"messages": [USER, {**CALL, "tool_calls": [{"type": "function", "function": {"name": "f"}}]}]},
        "messages.1.tool_calls.0.id",
    ),
    ({"reasoning_effort": "extreme"}, "reasoning"),
    ({"reasoning": {"effort": "extreme"}}, "reasoning"),
    ({"parallel_tool_calls": "maybe"}, "parallel_tool_calls"),
]


def _post_all(bodies: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    async def run() -> list[tuple[int, dict[str, Any]]]:
        app = create_app(ServeConfig(model_path=build_tiny_gguf(), ctx_size=1024))
        async with app.test_app() as test_app:
            client = test_app.test_client()
            await healthy(client)
            out = []
            for body in bodies:
                r = await client.post("/v1/chat/completions", json=body)
                out.append((r.status_code, await r.get_json()))
            return out

    return asyncio.run(run())


def test_bad_tool_input_is_a_400_naming_the_field() -> None:
    bodies = [{"messages": [USER], "max_tokens": 4, **patch} for patch, _ in BAD]
    for (status, body), (patch, param) in zip(_post_all(bodies), BAD, strict=True):
        assert status == 400, (patch, body)
        assert body["error"]["type"] == "invalid_request_error"
        assert (body["error"]["param"] or "").startswith(param), (patch, body)


def test_required_call_comes_back_whole_and_streamed() -> None:
    none = {"type": "function", "function": {"name": "ping"}}  # no parameters: any object
    base = {"messages": [USER], "tools": [WEATHER, none], "temperature": 0, "max_tokens": 48}
    history = [
        USER,
        with_args('{"city": "Paris"}'),
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "sunny"}]},
    ]
    (s1, whole), (s2, named), (s3, later) = _post_all(
        [
            {**base, "tool_choice": "required"},
            {**base, "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
            {**base, "messages": history, "tool_choice": "none"},
        ]
    )
    assert (s1, s2, s3) == (200, 200, 200)
    for body, names in ((whole, {"get_weather", "ping"}), (named, {"get_weather"})):
        choice = body["choices"][0]
        calls = choice["message"]["tool_calls"]
        assert calls and {c["function"]["name"] for c in calls} <= names, body
        assert all(c["id"] and c["type"] == "function" and isinstance(c["function"]["arguments"], str) for c in calls)
        assert "<tool_call>" not in (choice["message"]["content"] or "")
        if choice["finish_reason"] == "tool_calls":
            for c in calls:
                assert isinstance(json.loads(c["function"]["arguments"]), dict)
        else:
            assert choice["finish_reason"] == "length"
    assert "tool_calls" not in later["choices"][0]["message"]  # tool_choice none: no calls
