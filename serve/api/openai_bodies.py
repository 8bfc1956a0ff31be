"""OpenAI chat completion bodies from the chat core's events (serve/chat/core.py): the whole message, stream
deltas, usage. Pure functions, plus a small state for the inline (`separate_thinking: false`) labels.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from serve.chat.channels import ANALYSIS, COMMENTARY, FINAL
from serve.chat.core import ChatResult, Finish, Text, ToolCallArgs, ToolCallStart
from serve.chat.turn import TOOL_CALLS

THINKING = (ANALYSIS, COMMENTARY)
LABELS = {ANALYSIS: "[Analysis]", COMMENTARY: "[Commentary]", FINAL: "[Final]"}


@dataclass
class Inline:
    """`separate_thinking: false` streaming: harmony channels get a label when they change."""

    harmony: bool
    _last: str | None = None

    def delta(self, event: Text) -> str:
        if not self.harmony:
            return event.text
        prefix = ""
        if event.channel != self._last:
            prefix = ("\n" if self._last else "") + LABELS[event.channel] + "\n"
            self._last = event.channel
        return prefix + event.text


def stream_delta(event: Text | ToolCallStart | ToolCallArgs, separate: bool, inline: Inline) -> dict[str, Any]:
    if isinstance(event, ToolCallStart):
        call = {
            "index": event.index,
            "id": event.id,
            "type": "function",
            "function": {"name": event.name, "arguments": ""},
        }
        return {"tool_calls": [call]}
    if isinstance(event, ToolCallArgs):
        return {"tool_calls": [{"index": event.index, "function": {"arguments": event.text}}]}
    if not separate:
        return {"content": inline.delta(event)}
    if event.channel in THINKING:
        return {"reasoning_content": event.text, "reasoning": event.text, "channel": event.channel}
    return {"content": event.text}


def tool_calls(result: ChatResult) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments.strip()}}
        for c in result.calls
    ]


def chat_message(
    result: ChatResult, separate: bool, include: Collection[str] | None, harmony: bool, raw: str
) -> dict[str, Any]:
    texts = result.channels
    calls = tool_calls(result)
    if not separate:
        if harmony:
            content = "\n".join(f"{LABELS[c]}\n{t}" for c, t in texts.items())
        elif calls:  # the raw text would carry the call markup
            content = "".join([f"<think>{texts[ANALYSIS]}</think>" if ANALYSIS in texts else "", texts.get(FINAL, "")])
        else:
            content = raw.strip()
        message: dict[str, Any] = {"role": "assistant", "content": content or (None if calls else "")}
        if calls:
            message["tool_calls"] = calls
        return message
    final = texts.get(FINAL, "")
    message = {"role": "assistant", "content": final or (None if calls else "")}
    if calls:
        message["tool_calls"] = calls
    thinking = {c: texts[c] for c in THINKING if c in texts}
    if thinking:
        joined = "\n\n".join(thinking.values())
        message["reasoning_content"] = message["reasoning"] = joined
        raw_thinking = "\n".join(f"{LABELS[c]}\n{t}" for c, t in thinking.items())
        message["thinking"] = {**thinking, "raw": raw_thinking}
    message["channels"] = {c: t for c, t in texts.items() if include is None or c in include}
    return message


def usage(finish: Finish, per_channel: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "prompt_tokens": finish.prompt_tokens,
        "completion_tokens": finish.completion_tokens,
        "total_tokens": finish.prompt_tokens + finish.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": finish.cached_tokens},  # OpenAI's field; the prompt cache's part
    }
    if per_channel:
        counts = finish.channel_tokens
        body["thinking_tokens"] = sum(counts.get(c, 0) for c in THINKING)
        # OpenAI's field for the same count (what the SDKs and reasoning-aware clients read)
        body["completion_tokens_details"] = {"reasoning_tokens": body["thinking_tokens"]}
        body["channel_tokens"] = {c: counts[c] for c in (ANALYSIS, COMMENTARY, FINAL, TOOL_CALLS) if counts.get(c)}
    return body
