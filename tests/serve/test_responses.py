"""Shaping a generation into API bodies (pure): whole messages, inline form, include_channels, usage."""

from __future__ import annotations

from serve.channels import ChannelParser, Format
from serve.responses import Turn, chat_message, stream_delta, usage

HARMONY_TOKENS = ["<|channel|>", "analysis", "<|message|>", "Capital", " of France.", "<|end|>",
                  "<|start|>", "assistant", "<|channel|>", "commentary", "<|message|>", "{}", "<|end|>",
                  "<|start|>", "assistant", "<|channel|>", "final", "<|message|>", "Par", "is"]


def turn_of(tokens: list[str], fmt: Format, opened: bool = False) -> tuple[Turn, list]:
    turn = Turn(ChannelParser(fmt, opened))
    events = [e for t in tokens for e in turn.add(t)] + turn.finish()
    return turn, events


def test_harmony_message_and_usage() -> None:
    turn, _ = turn_of(HARMONY_TOKENS, Format.HARMONY)
    msg = chat_message(turn, separate=True, include=None)
    assert msg["content"] == "Paris"
    assert msg["reasoning_content"] == msg["reasoning"] == "Capital of France.\n\n{}"
    assert msg["thinking"] == {"analysis": "Capital of France.", "commentary": "{}",
                               "raw": "[Analysis]\nCapital of France.\n[Commentary]\n{}"}
    assert msg["channels"] == {"analysis": "Capital of France.", "commentary": "{}", "final": "Paris"}
    assert chat_message(turn, True, ["final"])["channels"] == {"final": "Paris"}
    u = usage(turn, 10, len(HARMONY_TOKENS))
    # header words count to their channel; the 10 special tokens count nowhere
    assert u["channel_tokens"] == {"analysis": 3, "commentary": 3, "final": 4}
    assert sum(u["channel_tokens"].values()) == len(HARMONY_TOKENS) - sum(t.startswith("<|") for t in HARMONY_TOKENS)
    assert u["thinking_tokens"] == 6 and u["total_tokens"] == 10 + len(HARMONY_TOKENS)


def test_harmony_inline_whole_and_streamed() -> None:
    turn, events = turn_of(HARMONY_TOKENS, Format.HARMONY)
    whole = chat_message(turn, separate=False, include=None)
    assert whole == {"role": "assistant", "content": "[Analysis]\nCapital of France.\n[Commentary]\n{}\n[Final]\nParis"}
    streamed = "".join(stream_delta(e, False, turn)["content"] for e in events)
    assert streamed == whole["content"]


def test_think_message_no_thinking_fields_when_none() -> None:
    turn, events = turn_of(["<think>", "\n", "hmm", "\n", "</think>", "\n\n", "4"], Format.THINK)
    msg = chat_message(turn, True, None)
    assert msg["content"] == "4" and msg["reasoning_content"] == "hmm"
    deltas = [stream_delta(e, True, turn) for e in events]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "hmm\n"
    assert all(d["channel"] == "analysis" and d["reasoning"] == d["reasoning_content"] for d in deltas[:-1])
    assert deltas[-1] == {"content": "4"}
    assert chat_message(turn, False, None)["content"] == "<think>\nhmm\n</think>\n\n4"
    plain, _ = turn_of(["Just ", "text"], Format.THINK)
    msg = chat_message(plain, True, None)
    assert msg == {"role": "assistant", "content": "Just text", "channels": {"final": "Just text"}}
    assert "thinking" not in msg and "reasoning_content" not in msg
