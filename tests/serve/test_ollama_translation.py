"""serve/api/ollama.py's pure parts: options, think and format as the chat path's fields, Ollama's history as
chat messages, chat events as Ollama's answer pieces, and the names and error bodies of hearth_common."""

from __future__ import annotations

from hearth_common import ollama_errors
from serve.api.blocks import CALL, TEXT, Blocks
from serve.api.ollama import Answer, Parts, chat_messages, reasoning, response_format, sampling
from serve.api.ollama_schemas import ChatBody, ShowBody
from serve.chat.core import Text, ToolCallArgs, ToolCallStart


def test_options_as_ollama_reads_them() -> None:
    got = sampling(
        {"num_predict": 5, "temperature": 0, "top_k": 10**12, "seed": 2**40 + 7, "num_ctx": 8192, "mirostat": 1}
    )
    assert got == {"max_tokens": 5, "temperature": 0, "top_k": 2**31 - 1, "seed": 7}
    assert sampling({"num_predict": -1, "seed": -1, "top_k": -3}) == {"seed": None, "top_k": 0}
    assert sampling({"temperature": None, "stop": ["\n"]}) == {"stop": ["\n"]}
    assert sampling(None) == {}


def test_think_and_format() -> None:
    assert [reasoning(t) for t in (None, True, False, "low", "high")] == [
        ("medium", True),
        ("medium", True),
        ("none", False),
        ("low", True),
        ("high", True),
    ]
    assert response_format("") is None and response_format({}) is None
    assert response_format("json") == {"type": "json_object"}
    schema = {"type": "object"}
    assert response_format(schema) == {"type": "json_schema", "json_schema": {"name": "format", "schema": schema}}


def test_history_results_find_their_calls_by_name() -> None:
    body = ChatBody.model_validate(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "weather and time in Oslo?"},
                {
                    "role": "assistant",
                    "content": "",
                    "thinking": "two calls",
                    "tool_calls": [
                        {"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}},
                        {"function": {"name": "get_time", "arguments": {"city": "Oslo"}}},
                    ],
                },
                {"role": "tool", "content": "09:00", "tool_name": "get_time"},
                {"role": "tool", "content": "snowy", "tool_name": "get_weather"},
                {"role": "tool", "content": "late", "tool_call_id": "given"},
            ],
        }
    )
    out = chat_messages(body.messages)
    ids = [c["id"] for c in out[1]["tool_calls"]]
    assert out[1]["reasoning_content"] == "two calls" and len(set(ids)) == 2 and all(len(i) == 9 for i in ids)
    assert out[1]["tool_calls"][0]["function"]["arguments"] == {"city": "Oslo"}
    assert [m["tool_call_id"] for m in out[2:]] == [ids[1], ids[0], "given"]
    assert out[2]["name"] == "get_time"


def test_null_fields_are_absent_and_show_takes_name() -> None:
    body = ChatBody.model_validate({"model": "m", "stream": None, "options": None, "think": None})
    assert body.stream is True and body.options is None
    assert ShowBody.model_validate({"name": "m:latest"}).model

    assert ollama_errors.model_name("demo-think:latest") == "demo-think"
    assert ollama_errors.model_name("demo-think:7b") == "demo-think:7b"
    assert ollama_errors.error_line("boom") == b'{"error": "boom"}\n'


EVENTS = [
    Text("analysis", "\n  thinking "),
    Text("commentary", "more"),
    Text("final", " answer "),
    ToolCallStart(0, "call1", "get_weather"),
    ToolCallArgs(0, '{"city": '),
    ToolCallArgs(0, '"Oslo"}'),
    Text("final", "after"),
    ToolCallStart(1, "call2", "cut"),
    ToolCallArgs(1, '{"x": '),
]


def test_stream_pieces_join_to_the_whole_answer() -> None:
    parts = Parts(Blocks(thinking=True))
    pieces = [p for e in EVENTS for p in parts.feed(e)] + parts.close()
    answer = Answer()
    answer.add(pieces)
    assert answer.thinking == "thinking\n\nmore" and answer.content == "answer\n\nafter"
    assert [p.kind for p in pieces if p.kind == CALL] == [CALL, CALL]
    assert answer.calls == [
        {"id": "call1", "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Oslo"}}},
        {"id": "call2", "function": {"index": 1, "name": "cut", "arguments": {}}},  # cut off: no arguments
    ]
    hidden = Parts(Blocks(thinking=False))
    assert {p.kind for e in EVENTS for p in hidden.feed(e)} == {TEXT, CALL}
    raw = Parts(Blocks(thinking=False), trim=False)
    assert [p.text for p in raw.feed(Text("final", " as is "))] == [" as is "]
