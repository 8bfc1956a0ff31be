"""Shaping a generation into API bodies (pure): the chat core's events, whole messages, inline form,
include_channels, usage, tool calls."""

from __future__ import annotations

import json

from serve.api.openai_bodies import Inline, chat_message, stream_delta, usage
from serve.chat.channels import ChannelParser, Format
from serve.chat.core import ChatResult, Finish, Generation, Text, ToolCallArgs, ToolCallStart
from serve.chat.tools.formats import ToolFormat

HARMONY_TOKENS = [
    "<|channel|>",
    "analysis",
    "<|message|>",
    "Capital",
    " of France.",
    "<|end|>",
    "<|start|>",
    "assistant",
    "<|channel|>",
    "commentary",
    "<|message|>",
    "{}",
    "<|end|>",
    "<|start|>",
    "assistant",
    "<|channel|>",
    "final",
    "<|message|>",
    "Par",
    "is",
]


def run(
    tokens: list[str],
    fmt: Format,
    opened: bool = False,
    tools: ToolFormat | None = None,
) -> tuple[Generation, list, ChatResult]:
    gen = Generation(ChannelParser(fmt, opened), tools, new_id=lambda i: f"call_{i}")
    events = [e for t in tokens for e in gen.piece(t)] + gen.end("stop", 10, len(tokens))
    result = ChatResult()
    for e in events:
        result.add(e)
    return gen, events, result


def message(
    tokens: list[str], fmt: Format, separate: bool = True, include: list[str] | None = None, **kw: object
) -> dict:
    gen, _, result = run(tokens, fmt, **kw)
    return chat_message(result, separate, include, gen.turn.harmony, gen.turn.raw)


def test_harmony_message_and_usage() -> None:
    msg = message(HARMONY_TOKENS, Format.HARMONY)
    assert msg["content"] == "Paris"
    assert msg["reasoning_content"] == msg["reasoning"] == "Capital of France.\n\n{}"
    assert msg["thinking"] == {
        "analysis": "Capital of France.",
        "commentary": "{}",
        "raw": "[Analysis]\nCapital of France.\n[Commentary]\n{}",
    }
    assert msg["channels"] == {"analysis": "Capital of France.", "commentary": "{}", "final": "Paris"}
    assert message(HARMONY_TOKENS, Format.HARMONY, include=["final"])["channels"] == {"final": "Paris"}
    _, _, result = run(HARMONY_TOKENS, Format.HARMONY)
    assert result.finish is not None
    u = usage(result.finish)
    # header words count to their channel; the 10 special tokens count nowhere
    assert u["channel_tokens"] == {"analysis": 3, "commentary": 3, "final": 4}
    assert sum(u["channel_tokens"].values()) == len(HARMONY_TOKENS) - sum(t.startswith("<|") for t in HARMONY_TOKENS)
    assert u["thinking_tokens"] == 6 and u["total_tokens"] == 10 + len(HARMONY_TOKENS)


def test_harmony_inline_whole_and_streamed() -> None:
    gen, events, result = run(HARMONY_TOKENS, Format.HARMONY)
    whole = chat_message(result, False, None, True, gen.turn.raw)
    assert whole == {"role": "assistant", "content": "[Analysis]\nCapital of France.\n[Commentary]\n{}\n[Final]\nParis"}
    inline = Inline(True)
    streamed = "".join(stream_delta(e, False, inline)["content"] for e in events if isinstance(e, Text))
    assert streamed == whole["content"]


def test_think_message_no_thinking_fields_when_none() -> None:
    tokens = ["<think>", "\n", "hmm", "\n", "</think>", "\n\n", "4"]
    gen, events, result = run(tokens, Format.THINK)
    msg = chat_message(result, True, None, False, gen.turn.raw)
    assert msg["content"] == "4" and msg["reasoning_content"] == "hmm"
    deltas = [stream_delta(e, True, Inline(False)) for e in events if isinstance(e, Text)]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "hmm\n"
    assert all(d["channel"] == "analysis" and d["reasoning"] == d["reasoning_content"] for d in deltas[:-1])
    assert deltas[-1] == {"content": "4"}
    assert chat_message(result, False, None, False, gen.turn.raw)["content"] == "<think>\nhmm\n</think>\n\n4"
    msg = message(["Just ", "text"], Format.THINK)
    assert msg == {"role": "assistant", "content": "Just text", "channels": {"final": "Just text"}}
    assert "thinking" not in msg and "reasoning_content" not in msg


def test_hermes_call_whole_streamed_and_counted() -> None:
    tokens = [
        "<think>",
        "Weather",
        " asked.",
        "</think>",
        "\n\n",
        "<tool_call>",
        "\n",
        '{"name": "get_weather", ',
        '"arguments": {"city"',
        ': "Paris"}}',
        "\n",
        "</tool_call>",
    ]
    gen, events, result = run(tokens, Format.THINK, tools=ToolFormat.HERMES)
    assert result.finish is not None and result.finish.reason == "tool_calls"
    msg = chat_message(result, True, None, False, gen.turn.raw)
    assert msg["content"] is None and msg["reasoning_content"] == "Weather asked."
    assert msg["tool_calls"] == [
        {"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    ]
    deltas = [stream_delta(e, True, Inline(False)) for e in events if not isinstance(e, Finish)]
    assert not any("content" in d for d in deltas)  # no markup, not even whitespace, as answer text
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert calls[0] == {
        "index": 0,
        "id": "call_0",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert json.loads("".join(c["function"]["arguments"] for c in calls)) == {"city": "Paris"}
    assert len(calls) > 2  # the arguments came in fragments, as generated
    counts = result.finish.channel_tokens
    # the layout newlines before the call are answer tokens; <think> tags count nowhere
    assert counts == {"analysis": 2, "final": 1, "tool_calls": 7}
    assert usage(result.finish)["thinking_tokens"] == 2


def test_harmony_call_message() -> None:
    tokens = [
        "<|channel|>",
        "analysis",
        "<|message|>",
        "Need weather.",
        "<|end|>",
        "<|start|>",
        "assistant",
        "<|channel|>",
        "commentary",
        " to",
        "=functions",
        ".get_weather",
        " ",
        "<|constrain|>",
        "json",
        "<|message|>",
        '{"city":',
        ' "Oslo"}',
    ]
    _, events, result = run(tokens, Format.HARMONY, tools=ToolFormat.HARMONY)
    assert [e for e in events if isinstance(e, ToolCallStart)] == [ToolCallStart(0, "call_0", "get_weather")]
    assert "".join(e.text for e in events if isinstance(e, ToolCallArgs)) == '{"city": "Oslo"}'
    assert result.channels == {"analysis": "Need weather."} and result.finish is not None
    assert result.finish.reason == "tool_calls"
    assert result.finish.channel_tokens == {"analysis": 2, "tool_calls": 9}
    # without tools, the same message is commentary text, as before
    _, _, plain = run(tokens, Format.HARMONY)
    assert plain.channels["commentary"] == '{"city": "Oslo"}' and plain.finish.reason == "stop"
