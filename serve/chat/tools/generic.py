"""The generic format, for templates that know no tools: the tool list and the call format go into the system
message (as llama.cpp's server does), and the history's calls and results become plain turns the template
can render.

Calls use Hermes markup (`<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, read by hermes.py):
JSON between tags, so answer text may stand beside a call and the tool grammar has a marker to start at.
"""

from __future__ import annotations

import json
from typing import Any

from serve.chat.tools.hermes import CLOSE, OPEN

Message = dict[str, Any]


def instructions(tools: list[dict[str, Any]], choice: str, parallel: bool) -> str:
    """The system-message text that teaches a model the tools and how to call them."""
    listing = "\n".join(json.dumps(t.get("function", t), ensure_ascii=False) for t in tools)
    how = f'To call a tool, write {OPEN}{{"name": <tool name>, "arguments": <arguments as a JSON object>}}{CLOSE}' + (
        " (one such block for each call)." if parallel else " (one call at most)."
    )
    rule = {
        "required": "You must call a tool.",
        "auto": "Call a tool when it helps; otherwise answer directly.",
    }.get(choice, "You must call a tool.")
    return f"You can call these tools:\n{listing}\n\n{how}\n{rule}"


def call_text(call: dict[str, Any]) -> str:
    fn = call["function"]
    body = json.dumps({"name": fn["name"], "arguments": fn["arguments"]}, ensure_ascii=False)
    return f"{OPEN}{body}{CLOSE}"


def plain_history(messages: list[Message], system_text: str | None) -> list[Message]:
    """Calls into the assistant's text, results into user turns (consecutive results in one turn), and the
    tool instructions at the end of the system message (a new one first when there is none)."""
    out: list[Message] = []
    last_was_result = False
    for m in messages:
        role = m["role"]
        if role == "tool":
            result = f"<tool_response>\n{m.get('content') or ''}\n</tool_response>"
            if last_was_result:
                out[-1] = {**out[-1], "content": out[-1]["content"] + "\n" + result}
            else:
                out.append({"role": "user", "content": result})
        elif role == "assistant" and m.get("tool_calls"):
            parts = [m.get("content") or ""] + [call_text(c) for c in m["tool_calls"]]
            rest = {k: v for k, v in m.items() if k != "tool_calls"}
            out.append({**rest, "content": "\n".join(p for p in parts if p)})
        else:
            out.append(m)
        last_was_result = role == "tool"
    if system_text:
        if out and out[0]["role"] == "system":
            out[0] = {**out[0], "content": f"{out[0].get('content') or ''}\n\n{system_text}".lstrip()}
        else:
            out.insert(0, {"role": "system", "content": system_text})
    return out
