"""Anthropic Messages and OpenAI Responses translations, pure parts: requests -> ChatRequest, chat events ->
content blocks, the responses store, the router's view of their streams, error bodies. (The SDK tests in
test_anthropic_sdk.py and test_responses_sdk.py run them end to end.)"""

from __future__ import annotations

import asyncio
import itertools
import json
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from hearth_common import anthropic_errors
from serve.api import anthropic as anthropic_api, responses as responses_api
from serve.api.anthropic_schemas import CountTokensRequest, MessagesRequest
from serve.api.blocks import Blocks, Close, Delta, Open
from serve.api.responses_schemas import ResponsesRequest
from serve.api.responses_store import ResponseStore
from serve.chat.core import Error, Finish, Text, ToolCallArgs, ToolCallStart
from serve.errors import InvalidRequest

EVENTS = [
    Text("analysis", "\n"),
    Text("analysis", "Think "),
    Text("analysis", "hard.  "),
    Text("commentary", "Then act."),
    Text("final", "\n\n"),
    Text("final", "Hello"),
    Text("final", " world \n"),
    ToolCallStart(0, "call_a", "get_weather"),
    ToolCallArgs(0, ' {"city"'),
    ToolCallArgs(0, ': "Oslo"}\n'),
    ToolCallStart(1, "call_b", "get_time"),
    ToolCallArgs(1, "{}"),
]
# What whole responses hold for EVENTS: each channel's text stripped, thinking channels joined by a blank line
EXPECTED = [
    ("thinking", "Think hard.\n\nThen act.", "", ""),
    ("text", "Hello world", "", ""),
    ("call", '{"city": "Oslo"}', "call_a", "get_weather"),
    ("call", "{}", "call_b", "get_time"),
]


def _run(blocks: Blocks, events: list[Any]) -> list[Any]:
    return [step for e in events for step in blocks.feed(e)] + blocks.close()


def _resplit(events: list[Any], cuts: list[int]) -> list[Any]:
    """The same events with every text cut at the given offsets (a token boundary anywhere)."""
    out: list[Any] = []
    for e in events:
        text = e.text if isinstance(e, Text | ToolCallArgs) else None
        if not text:
            out.append(e)
            continue
        points = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
        pieces = [text[a:b] for a, b in itertools.pairwise(points)]
        out += [Text(e.channel, p) if isinstance(e, Text) else ToolCallArgs(e.index, p) for p in pieces]
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 40), max_size=6))
def test_blocks_are_the_whole_texts_for_any_split(cuts: list[int]) -> None:
    blocks = Blocks()
    steps = _run(blocks, _resplit(EVENTS, cuts))
    assert [(b.kind, b.text, b.call_id, b.name) for b in blocks.blocks] == EXPECTED
    # every block: one Open, deltas that add up to its text (never blank), one Close with that text
    for i, (kind, text, call_id, name) in enumerate(EXPECTED):
        mine = [s for s in steps if s.index == i]
        assert mine[0] == Open(i, kind, call_id, name) and mine[-1] == Close(i, kind, text, call_id, name)
        deltas = [s.text for s in mine[1:-1]]
        assert all(isinstance(s, Delta) for s in mine[1:-1]) and "".join(deltas) == text
        assert all(d.strip() for d in deltas[:1])
    assert [s.index for s in steps] == sorted(s.index for s in steps)  # blocks one after another


def test_blocks_without_thinking_and_blank_text() -> None:
    blocks = Blocks(thinking=False)
    _run(blocks, [Text("analysis", "hidden"), Text("final", "  \n"), Text("final", "shown"), Text("analysis", "x")])
    assert [(b.kind, b.text) for b in blocks.blocks] == [("text", "shown")]
    blocks = Blocks()
    assert _run(blocks, [Text("final", " \n "), Text("analysis", "\n")]) == [] and blocks.blocks == []


# -- Anthropic requests -------------------------------------------------------------------------------------


def _messages(**body: Any) -> MessagesRequest:
    return MessagesRequest.model_validate({"model": "m", "max_tokens": 64, **body})


def test_anthropic_request_maps_onto_chat() -> None:
    req = _messages(
        system=[
            {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Be kind."},
        ],
        messages=[
            {"role": "user", "content": "Weather in Oslo?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "Call the tool.", "signature": "s"},
                    {"type": "redacted_thinking", "data": "opaque"},
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "snowy"}]},
                    {"type": "text", "text": "And Lima?"},
                ],
            },
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {}}],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": "no such city", "is_error": True}
                ],
            },
        ],
        tools=[
            {"name": "get_weather", "description": "Weather.", "input_schema": {"type": "object", "properties": {}}}
        ],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        stop_sequences=["END"],
        temperature=0.5,
        top_k=7,
        top_p=0.9,
        metadata={"user_id": "u1"},
        thinking={"type": "enabled", "budget_tokens": 8000},
    )
    chat = anthropic_api.chat_request(req)
    got = [m.model_dump(exclude_none=True) for m in chat.messages]
    assert got == [
        {"role": "system", "content": "Be brief.\n\nBe kind."},
        {"role": "user", "content": "Weather in Oslo?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "reasoning_content": "Call the tool.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "content": "snowy", "tool_call_id": "toolu_1"},
        {"role": "user", "content": "And Lima?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "toolu_2", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "content": "Error: no such city", "tool_call_id": "toolu_2"},
    ]
    assert chat.tool_choice == "required" and chat.parallel_tool_calls is False
    assert chat.tools and chat.tools[0].function.parameters == {"type": "object", "properties": {}}
    assert (chat.max_tokens, chat.stops, chat.temperature, chat.top_k, chat.top_p, chat.user) == (
        64,
        ("END",),
        0.5,
        7,
        0.9,
        "u1",
    )
    assert chat.reasoning == "medium"


@pytest.mark.parametrize(
    ("thinking", "level", "shown"),
    [
        (None, "none", False),
        ({"type": "disabled"}, "none", False),
        ({"type": "adaptive"}, "medium", True),
        ({"type": "enabled", "budget_tokens": 1024}, "low", True),
        ({"type": "enabled", "budget_tokens": 4096}, "medium", True),
        ({"type": "enabled", "budget_tokens": 16384}, "high", True),
    ],
)
def test_anthropic_thinking_levels(thinking: dict[str, Any] | None, level: str, shown: bool) -> None:
    req = _messages(messages=[{"role": "user", "content": "hi"}], **({"thinking": thinking} if thinking else {}))
    assert anthropic_api.chat_request(req).reasoning == level and anthropic_api.shows_thinking(req) is shown


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "none"}, "none"),
        ({"type": "any"}, "required"),
        ({"type": "tool", "name": "f"}, {"type": "function", "function": {"name": "f"}}),
    ],
)
def test_anthropic_tool_choice(choice: dict[str, Any], expected: Any) -> None:
    req = _messages(
        messages=[{"role": "user", "content": "hi"}],
        tool_choice=choice,
        tools=[{"name": "f", "input_schema": {"type": "object"}}],
    )
    got = anthropic_api.chat_request(req).tool_choice
    assert (got if isinstance(got, str) else got.model_dump()) == expected


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "The answer is"}], "messages.1"),
        (
            [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "nope", "content": "x"}]}],
            "messages.0.content.0.tool_use_id",
        ),
        (
            [{"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}],
            "messages.0.content.0",
        ),
    ],
)
def test_anthropic_history_refused(messages: list[dict[str, Any]], param: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        anthropic_api.chat_request(_messages(messages=messages))
    assert err.value.param == param


def test_anthropic_bad_schema_names_input_schema() -> None:
    req = _messages(
        messages=[{"role": "user", "content": "hi"}], tools=[{"name": "f", "input_schema": {"type": "array"}}]
    )
    with pytest.raises(InvalidRequest) as err:
        anthropic_api.chat_request(req)
    assert err.value.param == "tools.0.input_schema" and "object" in err.value.message


def test_count_tokens_request_needs_no_max_tokens() -> None:
    req = CountTokensRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert anthropic_api.chat_request(req).max_tokens is None


def test_anthropic_blocks_and_stop_reasons() -> None:
    assert anthropic_api.content_block("call", '{"a": 1}', "t1", "f") == {
        "type": "tool_use",
        "id": "t1",
        "name": "f",
        "input": {"a": 1},
    }
    assert anthropic_api.content_block("call", '{"a": ', "t1", "f")["input"] == {}  # cut by max_tokens
    thinking = anthropic_api.content_block("thinking", "hmm")
    assert thinking["signature"] == anthropic_api.signature("hmm") != anthropic_api.signature("hm")
    finish = Finish("stop", 10, 5, cached_tokens=4)
    assert anthropic_api.stop_reason(finish, False) == "end_turn"
    assert anthropic_api.stop_reason(Finish("stop", 1, 1, stop_sequence="END"), False) == "stop_sequence"
    assert anthropic_api.stop_reason(Finish("length", 1, 1), False) == "max_tokens"
    assert anthropic_api.stop_reason(Finish("length", 1, 1), True) == "model_context_window_exceeded"
    assert anthropic_api.stop_reason(Finish("tool_calls", 1, 1), False) == "tool_use"
    assert anthropic_api.usage(finish) == {"input_tokens": 6, "output_tokens": 5, "cache_read_input_tokens": 4}


def _fake_chat(events: list[Any]) -> Any:
    async def gen() -> Any:
        for e in events:
            yield e

    return SimpleNamespace(run=SimpleNamespace(job=SimpleNamespace(prompt=[1, 2, 3])), events=gen)


async def _drain(stream: Any) -> list[tuple[str, dict[str, Any]]]:
    return [e async for e in stream]


def test_anthropic_stream_events_and_midstream_error() -> None:
    chat = _fake_chat([Text("analysis", "hmm"), Text("final", "Hi"), Finish("stop", 3, 4)])
    events = asyncio.run(_drain(anthropic_api._stream(chat, Blocks(), {"id": "msg_1", "model": "m"}, False)))
    names = [n for n, _ in events]
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(data["type"] == name for name, data in events)
    assert events[0][1]["message"]["usage"] == {"input_tokens": 3, "output_tokens": 0}
    assert events[4][1]["delta"] == {"type": "signature_delta", "signature": anthropic_api.signature("hmm")}
    assert events[-2][1]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    chat = _fake_chat([Text("final", "Hi"), Error("decode failed")])
    events = asyncio.run(_drain(anthropic_api._stream(chat, Blocks(), {"id": "msg_1", "model": "m"}, False)))
    assert events[-1] == ("error", {"type": "error", "error": {"type": "api_error", "message": "decode failed"}})


# -- Responses requests -------------------------------------------------------------------------------------


def test_responses_input_maps_onto_chat() -> None:
    req = ResponsesRequest.model_validate(
        {
            "model": "m",
            "instructions": "Be brief.",
            "reasoning": {"effort": "xhigh"},
            "max_output_tokens": 50,
            "input": [
                {"role": "user", "content": "Weather in Oslo and Lima?"},
                {
                    "type": "reasoning",
                    "id": "rs_1",
                    "summary": [],
                    "content": [{"type": "reasoning_text", "text": "Call twice."}],
                },
                {"type": "function_call", "id": "fc_1", "call_id": "c1", "name": "w", "arguments": '{"city": "Oslo"}'},
                {"type": "function_call", "call_id": "c2", "name": "w", "arguments": '{"city": "Lima"}'},
                {"type": "function_call_output", "call_id": "c1", "output": "snowy"},
                {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "sunny"}]},
                {
                    "type": "message",
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": "Snowy and sunny.", "annotations": []}],
                },
                {"role": "developer", "content": [{"type": "input_text", "text": "Now thanks."}]},
            ],
            "tools": [
                {"type": "function", "name": "w", "parameters": {"type": "object", "properties": {}}, "strict": True}
            ],
            "tool_choice": {"type": "function", "name": "w"},
            "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}, "strict": True}},
        }
    )
    chat = responses_api.chat_request(req, responses_api.input_messages(req, []))
    assert [m.model_dump(exclude_none=True) for m in chat.messages] == [
        {"role": "user", "content": "Weather in Oslo and Lima?"},
        {
            "role": "assistant",
            "content": "",
            "reasoning_content": "Call twice.",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "w", "arguments": '{"city": "Oslo"}'}},
                {"id": "c2", "type": "function", "function": {"name": "w", "arguments": '{"city": "Lima"}'}},
            ],
        },
        {"role": "tool", "content": "snowy", "tool_call_id": "c1"},
        {"role": "tool", "content": "sunny", "tool_call_id": "c2"},
        {"role": "assistant", "content": "Snowy and sunny."},
        {"role": "developer", "content": "Now thanks."},
    ]
    assert (chat.developer_instructions, chat.reasoning, chat.max_tokens) == ("Be brief.", "high", 50)
    # `strict` is the API's flag, not part of what the template shows the model
    assert chat.tools and chat.tools[0].function.name == "w" and chat.tools[0].function.strict is None
    assert chat.tool_choice is not None and not isinstance(chat.tool_choice, str)
    assert chat.tool_choice.function.name == "w"
    assert chat.response_format and chat.response_format.type == "json_schema"
    assert chat.response_format.json_schema and chat.response_format.json_schema.schema_ == {"type": "object"}


def test_responses_string_input_and_refusals() -> None:
    req = ResponsesRequest.model_validate({"input": "hi"})
    assert responses_api.input_messages(req, []) == [{"role": "user", "content": "hi"}] and req.level == "medium"
    orphan = ResponsesRequest.model_validate(
        {"input": [{"type": "function_call_output", "call_id": "x", "output": "1"}]}
    )
    with pytest.raises(InvalidRequest) as err:
        responses_api.input_messages(orphan, [])
    assert err.value.param == "input.0.call_id"
    # a call made in the stored conversation may be answered
    earlier = [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "x", "type": "function", "function": {"name": "w", "arguments": "{}"}}],
        }
    ]
    assert responses_api.input_messages(orphan, earlier) == [{"role": "tool", "tool_call_id": "x", "content": "1"}]


def test_responses_store_is_bounded() -> None:
    store = ResponseStore(max_items=2, max_bytes=200)
    conv = [{"role": "user", "content": "x" * 40}]
    store.put("a", conv)
    store.put("b", conv)
    assert store.get("a") == conv  # a is now the most recent
    store.put("c", conv)
    assert store.get("b") is None and store.get("a") == conv and len(store) == 2
    store.put("big", [{"role": "user", "content": "x" * 500}])  # larger than the whole budget: not kept
    assert store.get("big") is None and len(store) == 2
    store.put("d", [{"role": "user", "content": "y" * 120}])  # the bytes bound evicts the least recent
    assert store.bytes <= 200 and store.get("d") is not None and store.get("c") is None
    with pytest.raises(InvalidRequest):
        request = ResponsesRequest.model_validate({"input": "hi", "previous_response_id": "gone"})
        asyncio.run(responses_api.history(store, request))


def test_responses_stream_events_and_midstream_error() -> None:
    req = ResponsesRequest.model_validate({"input": "hi", "stream": True})
    meta = {"id": "resp_1", "created_at": 1, "model": "m"}
    kept: list[Any] = []

    async def keep(blocks: Any) -> None:
        kept.append(blocks)

    chat = _fake_chat(
        [
            Text("analysis", "hmm"),
            Text("final", "Hi"),
            ToolCallStart(0, "c1", "w"),
            ToolCallArgs(0, "{}"),
            Finish("tool_calls", 3, 4, {"analysis": 2}),
        ]
    )
    events = asyncio.run(_drain(responses_api._stream(chat, req, meta, keep)))
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
    assert [n for n, _ in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.reasoning_text.delta",
        "response.reasoning_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    final = events[-1][1]["response"]
    assert [o["type"] for o in final["output"]] == ["reasoning", "message", "function_call"]
    assert final["usage"]["output_tokens_details"] == {"reasoning_tokens": 2} and len(kept) == 1
    chat = _fake_chat([Text("final", "Hi"), Error("decode failed")])
    events = asyncio.run(_drain(responses_api._stream(chat, req, meta, keep)))
    assert [n for n, _ in events[-2:]] == ["error", "response.failed"]
    assert events[-1][1]["response"]["error"] == {"code": "server_error", "message": "decode failed"}


# -- errors and the router's view -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (504, "timeout_error"),
        (405, "invalid_request_error"),
    ],
)
def test_anthropic_error_types(status: int, kind: str) -> None:
    assert anthropic_errors.error_body(status, "m") == {"type": "error", "error": {"type": kind, "message": "m"}}


def test_sse_watch_ends_on_named_terminal_events() -> None:
    from route.sse import SseWatch, error_event, terminal_events

    for path, end in (
        ("/v1/messages", b'event: message_stop\ndata: {"type": "message_stop"}\n\n'),
        ("/v1/responses", b"event: response.completed\ndata: {}\n\n"),
        ("/v1/responses", b"event: response.incomplete\ndata: {}\n\n"),
        ("/v1/chat/completions", b"data: [DONE]\n\n"),
    ):
        watch = SseWatch(terminal_events(path))
        watch.feed(b'event: ping\ndata: {"type": "ping"}\n\n')
        assert not watch.done
        watch.feed(end)
        assert watch.done and watch.error is None
        other = SseWatch(terminal_events("/v1/chat/completions" if path != "/v1/chat/completions" else "/v1/messages"))
        other.feed(end)
        assert other.done is (end == b"data: [DONE]\n\n")  # a named end counts on its own API's path only
    watch = SseWatch(terminal_events("/v1/messages"))
    watch.feed(anthropic_errors.error_event("boom"))
    assert watch.done and watch.error == "boom"
    cut = error_event("cut", path="/v1/messages").decode()
    assert cut.startswith("event: error\n") and json.loads(cut.split("data: ")[1])["error"]["type"] == "api_error"
    cut = error_event("cut", path="/v1/responses").decode()
    assert json.loads(cut.split("data: ")[1]) == {
        "type": "error",
        "code": "upstream_error",
        "message": "cut",
        "param": None,
    }
    assert error_event("cut").decode().endswith("data: [DONE]\n\n")
