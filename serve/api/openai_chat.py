"""OpenAI chat completions (POST /v1/chat/completions) over the chat core: a whole `chat.completion`, or its
stream of `chat.completion.chunk`s ending in `[DONE]`.

A token's chunk leaves through a Frame (serve/api/sse.py), encoded once per delta shape; the end of a stream
(finish, usage, [DONE]) goes out in one write.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from hearth_common.errors import error_body
from serve.api import logprobs, openai_bodies, sse
from serve.chat import ids
from serve.chat.core import Chat, Error, Finish, Text, collect, open_chat
from serve.chat.schemas import ChatRequest
from serve.runtime import Runtime

TEXT_FIELDS = frozenset({"content", "reasoning_content", "reasoning"})  # a chat delta's text (stream_delta)


async def respond(runtime: Runtime, req: ChatRequest) -> dict[str, Any] | AsyncGenerator[bytes, None]:
    """The whole completion, or (stream) its SSE bytes; errors before generation raise (the API's error body)."""
    chat = await open_chat(runtime, req)
    meta = {"id": f"chatcmpl-{ids.hex_id()}", "created": int(time.time()), "model": runtime.model_name}
    if req.stream:
        return _chunks(chat, req, meta)
    result = await collect(chat)
    assert result.finish is not None
    message = openai_bodies.chat_message(
        result, req.separate_thinking, req.include_channels, chat.turn.harmony, chat.raw
    )
    return {
        **meta,
        "object": "chat.completion",
        "reasoning_level": chat.level,
        "choices": [
            {
                "index": 0,
                "finish_reason": result.finish.reason,
                "message": message,
                "logprobs": logprobs.chat(chat.logprobs if req.logprob_count is not None else None),
            }
        ],
        "usage": openai_bodies.usage(result.finish),
    }


async def _chunks(chat: Chat, req: ChatRequest, meta: dict[str, Any]) -> AsyncGenerator[bytes, None]:
    """The stream's SSE bytes: a token's text through a Frame, the end (finish, usage, [DONE]) in one write."""
    sent = 0  # chat.logprobs already out in a chunk: each chunk carries the tokens generated since the last
    want_logprobs = req.logprob_count is not None
    frames: dict[tuple[str, ...], sse.Frame] = {}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        nonlocal sent
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
        if want_logprobs and len(chat.logprobs) > sent:
            choice["logprobs"] = logprobs.chat(chat.logprobs[sent:])
            sent = len(chat.logprobs)
        return {**meta, "object": "chat.completion.chunk", "choices": [choice]}

    def text(delta: dict[str, Any]) -> bytes:
        """A text delta through its Frame: {"content": t}, or the reasoning fields (t twice, and the channel,
        which is part of the frame's shape)."""
        value = delta.get("content", delta.get("reasoning_content"))
        if want_logprobs or not isinstance(value, str):
            return sse.data(chunk(delta))
        shape = (*delta, delta.get("channel", ""))
        frame = frames.get(shape)
        if frame is None:
            slotted = {k: sse.SLOT if k in TEXT_FIELDS else v for k, v in delta.items()}
            frame = frames[shape] = sse.Frame(chunk(slotted))
        return frame.fill(value)

    inline = openai_bodies.Inline(chat.turn.harmony)
    yield sse.data(chunk({"role": "assistant"}))
    async with aclosing(chat.events()) as events:
        async for event in events:
            if isinstance(event, Error):
                failed = {**meta, "object": "chat.completion.chunk", "choices": []}
                yield sse.data({**failed, **error_body(event.message, "server_error", event.code)}) + sse.DONE
                return
            if isinstance(event, Finish):
                end = sse.data(chunk({}, event.reason))
                if req.include_usage:
                    usage = {
                        **meta,
                        "object": "chat.completion.chunk",
                        "choices": [],
                        "usage": openai_bodies.usage(event),
                    }
                    end += sse.data(usage)
                yield end + sse.DONE
                return
            delta = openai_bodies.stream_delta(event, req.separate_thinking, inline)
            yield text(delta) if isinstance(event, Text) else sse.data(chunk(delta))
    yield sse.DONE
