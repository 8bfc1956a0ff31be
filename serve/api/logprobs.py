"""Token log-probabilities in OpenAI's two shapes. Pure functions over the engine's TokenLogprob records.

chat:        choices[].logprobs = {"content": [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}]}
completions: choices[].logprobs = {tokens, token_logprobs, top_logprobs: [{token: logprob}], text_offset}
A token that is part of a UTF-8 character shows as U+FFFD in `token`; `bytes` has its exact bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from serve.engine.engine import TokenLogprob


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def chat_content(entries: Sequence[TokenLogprob]) -> list[dict[str, Any]]:
    return [
        {
            "token": _text(e.token),
            "logprob": e.logprob,
            "bytes": list(e.token),
            "top_logprobs": [{"token": _text(t), "logprob": lp, "bytes": list(t)} for t, lp in e.top],
        }
        for e in entries
    ]


def chat(entries: Sequence[TokenLogprob] | None) -> dict[str, Any] | None:
    return None if entries is None else {"content": chat_content(entries)}


def completion(entries: Sequence[TokenLogprob] | None, offset: int) -> dict[str, Any] | None:
    """`offset`: characters before the first of these tokens (the prompt's length, then the text so far), as
    the legacy API counts text_offset."""
    if entries is None:
        return None
    offsets = []
    for e in entries:
        offsets.append(offset)
        offset += len(_text(e.token))
    return {
        "tokens": [_text(e.token) for e in entries],
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": [{**{_text(t): lp for t, lp in e.top}, _text(e.token): e.logprob} for e in entries],
        "text_offset": offsets,
    }
