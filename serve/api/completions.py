"""OpenAI legacy completions (POST /v1/completions): the prompt as is, no template, no channels; a whole
`text_completion` or its stream of chunks ending in `[DONE]`.

The generation goes through the chat core's plain path (`plain_chat`: every piece of text is the answer), so
whole responses fold its events as chat responses do.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from hearth_common.errors import error_body
from serve.api import logprobs, openai_bodies, sse
from serve.chat import ids
from serve.chat.core import Chat, Error, Finish, Text, collect, plain_chat
from serve.chat.schemas import CompletionRequest
from serve.runtime import Runtime


async def respond(runtime: Runtime, req: CompletionRequest) -> dict[str, Any] | AsyncGenerator[bytes, None]:
    """The whole completion, or (stream) its SSE bytes; errors before generation raise (the API's error body)."""
    chat = await plain_chat(runtime, req)
    meta = {"id": f"cmpl-{ids.hex_id()}", "created": int(time.time()), "model": runtime.model_name}
    if req.stream:
        return _chunks(chat, req, meta)
    result = await collect(chat)
    assert result.finish is not None
    logged = chat.logprobs if req.logprob_count is not None else None
    return {
        **meta,
        "object": "text_completion",
        "choices": [
            {
                "index": 0,
                "text": "".join(result.texts.values()),
                "finish_reason": result.finish.reason,
                "logprobs": logprobs.completion(logged, len(req.prompt)),
            }
        ],
        "usage": openai_bodies.usage(result.finish, per_channel=False),
    }


async def _chunks(chat: Chat, req: CompletionRequest, meta: dict[str, Any]) -> AsyncGenerator[bytes, None]:
    """The stream's SSE bytes: a token's text through a Frame, the end (finish, usage, [DONE]) in one write."""
    sent = 0  # chat.logprobs already out in a chunk
    offset = len(req.prompt)  # text_offset counts characters from the prompt's start

    def chunk(text: str, finish: str | None = None) -> dict[str, Any]:
        nonlocal offset, sent
        pending = chat.logprobs[sent:]
        block = logprobs.completion(pending, offset) if pending else None
        if block:
            offset = block["text_offset"][-1] + len(block["tokens"][-1])
            sent = len(chat.logprobs)
        return {
            **meta,
            "object": "text_completion",
            "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": block}],
        }

    frame = sse.Frame(chunk(sse.SLOT))
    async with aclosing(chat.events()) as events:
        async for event in events:
            if isinstance(event, Error):
                failed = {**meta, "object": "text_completion", "choices": []}
                yield sse.data({**failed, **error_body(event.message, "server_error", event.code)}) + sse.DONE
                return
            if isinstance(event, Finish):
                end = sse.data(chunk("", event.reason))
                if req.include_usage:
                    usage = {**meta, "object": "text_completion", "choices": []}
                    end += sse.data({**usage, "usage": openai_bodies.usage(event, per_channel=False)})
                yield end + sse.DONE
                return
            if isinstance(event, Text):  # a plain chat has no calls
                yield sse.data(chunk(event.text)) if len(chat.logprobs) > sent else frame.fill(event.text)
    yield sse.DONE
