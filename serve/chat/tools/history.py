"""A history's calls for a template that shows the model its tools but does not write earlier calls (LFM2's
templates): each call turn's calls go into its text, in the format's own markup after the turn's text, where
the family's templates that do write calls put them. Tool results stay tool messages, which the template
renders."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Message = dict[str, Any]
CallWriter = Callable[[list[dict[str, Any]]], str]


def calls_in_text(messages: list[Message], write: CallWriter) -> list[Message]:
    out = []
    for m in messages:
        if m["role"] == "assistant" and m.get("tool_calls"):
            rest = {k: v for k, v in m.items() if k != "tool_calls"}
            out.append({**rest, "content": (m.get("content") or "") + write(m["tool_calls"])})
        else:
            out.append(m)
    return out
