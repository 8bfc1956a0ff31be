"""Anthropic Messages (POST /v1/messages, /v1/messages/count_tokens) as a translation onto the one chat path.

A request becomes a ChatRequest (`chat_request`), goes through `open_chat` like an OpenAI chat request, and
the chat events come back as Anthropic content blocks (serve/api/blocks.py): a whole `message`, or the stream of
`message_start`, `ping`, `content_block_start` / `_delta` / `_stop`, `message_delta`, `message_stop`.

Mapping:
- `system` -> a system message; user `image` blocks with a `base64` source -> image parts, in place, which the chat
  core checks as OpenAI chat's (a `url` source is an image URL: fetched where the server allows its host, else
  refused; a `file` source is refused by name; an image in
  an assistant message or a tool_result is refused); user `tool_result` blocks -> tool messages (`is_error` prefixes the text with
  "Error: "); assistant `tool_use` blocks -> tool calls, `thinking` blocks -> the message's reasoning
  (`redacted_thinking` is dropped: there is nothing to read). A trailing assistant message (prefill) is refused.
- `thinking` {enabled, budget_tokens} -> a reasoning level by budget (BUDGET_LEVELS), `adaptive` -> medium;
  absent or `disabled` -> `none` (thinking off where the template can; the thinking a model does anyway is
  not returned, as Anthropic returns no thinking blocks unless asked).
- `max_tokens` is a cap: past the context's room it is lowered to the room (stop_reason
  `model_context_window_exceeded` when that room ran out).
- `tool_choice` auto/any/tool/none -> auto/required/named/none; `disable_parallel_tool_use` -> one call.
- `thread` (message threads): refused with 400 `error.details.error_code: thread_unsupported_request`, the
  Messages API's answer where a request cannot be threaded; the SDK's tool runner then sends the whole history.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from pydantic import ValidationError

from hearth_common.anthropic_errors import error_body
from serve.api import sse
from serve.api.anthropic_schemas import (
    CountTokensRequest,
    ImageBlock,
    MessagesRequest,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from serve.api.blocks import CALL, TEXT, THINKING, Blocks, Delta, Open, Step
from serve.chat import ids, images, offload
from serve.chat.core import Chat, Error, Finish, fold, open_chat, prepare, prompt_tokens
from serve.chat.schemas import ChatRequest
from serve.errors import InvalidRequest
from serve.runtime import Runtime

# Anthropic's thinking budget (tokens) -> the reasoning level templates know: the first bound above it.
BUDGET_LEVELS = ((4096, "low"), (16384, "medium"))
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
CHOICES = {"auto": "auto", "any": "required", "none": "none"}
DELTAS = {
    THINKING: ("thinking_delta", "thinking"),
    TEXT: ("text_delta", "text"),
    CALL: ("input_json_delta", "partial_json"),
}

SseEvent = tuple[str, dict[str, Any]]


class ThreadUnsupported(InvalidRequest):
    """A request on a message thread: this server keeps no threads. The Messages API's answer for a request a
    thread cannot take, on which the SDK's tool runner sends the whole conversation again without `thread`."""

    code = "thread_unsupported_request"

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message, param)
        self.details = {"error_code": self.code}


def reasoning_level(req: CountTokensRequest) -> str:
    thinking = req.thinking
    if thinking is None or thinking.type == "disabled":
        return "none"
    if thinking.type == "adaptive" or thinking.budget_tokens is None:
        return "medium"
    return next((level for bound, level in BUDGET_LEVELS if thinking.budget_tokens < bound), "high")


def shows_thinking(req: CountTokensRequest) -> bool:
    return req.thinking is not None and req.thinking.type != "disabled"


def chat_request(req: CountTokensRequest) -> ChatRequest:
    """The ChatRequest the chat core runs for this Anthropic request."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": req.system_text}] if req.system_text else []
    called: set[str] = set()
    for i, message in enumerate(req.messages):
        if message.role == "assistant":
            if i == len(req.messages) - 1:
                raise InvalidRequest(
                    "a final assistant message (prefill) is not supported: end with a user message",
                    param=f"messages.{i}",
                )
            messages.append(_assistant(message.content, called, i))
        else:
            messages += _user(message.content, called, i)
    body: dict[str, Any] = {"model": req.model, "messages": messages, "reasoning": reasoning_level(req)}
    if req.thinking is not None and req.thinking.type == "enabled" and req.thinking.budget_tokens is not None:
        body["thinking_budget_tokens"] = req.thinking.budget_tokens  # a <think> model's thinking stops there
    if req.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {"name": t.name, "description": t.description, "parameters": t.input_schema},
            }
            for t in req.tools
        ]
    if req.tool_choice:
        choice = req.tool_choice
        body["tool_choice"] = CHOICES.get(choice.type) or {"type": "function", "function": {"name": choice.name}}
        body["parallel_tool_calls"] = not choice.disable_parallel_tool_use
    if isinstance(req, MessagesRequest):
        body.update(
            max_tokens=req.max_tokens,
            temperature=req.temperature,
            top_p=req.top_p,
            top_k=req.top_k,
            stop=req.stop_sequences,
            stream=req.stream,
            user=req.metadata.user_id if req.metadata else None,
        )
        output = req.output_config.format if req.output_config else None
        if output is not None:  # structured outputs: the chat core's json_schema response_format
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": output.schema_},
            }
    try:
        return ChatRequest.model_validate(body)
    except ValidationError as err:  # a tool's input_schema the chat path refuses
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]).replace("function.parameters", "input_schema")
        raise InvalidRequest(f"{where}: {first['msg']}", param=where) from None


def _assistant(content: list[Any], called: set[str], i: int) -> dict[str, Any]:
    for j, block in enumerate(content):
        if isinstance(block, ImageBlock):
            raise InvalidRequest("an assistant message cannot hold image blocks", param=f"messages.{i}.content.{j}")
    text = "".join(b.text for b in content if b.type == "text")
    thinking = "\n\n".join(b.thinking for b in content if isinstance(b, ThinkingBlock))
    calls: list[dict[str, Any]] = [
        {"id": b.id, "type": "function", "function": {"name": b.name, "arguments": json.dumps(b.input)}}
        for b in content
        if isinstance(b, ToolUseBlock)
    ]
    called.update(c["id"] for c in calls)
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if thinking:
        message["reasoning_content"] = thinking
    if calls:
        message["tool_calls"] = calls
    return message


def _image(block: ImageBlock, where: str) -> dict[str, Any]:
    """An image block as the chat core's image part (a data: URL, which the core checks)."""
    source = block.source
    if source.type == "url":  # fetched by the chat core where the server allows its host, else refused there
        return images.part(source.url)
    if source.type == "file":
        raise InvalidRequest(
            "file images (the Files API) are not supported by this server; send the image as a base64 source",
            param=where,
        )
    return images.part(images.data_url(source.data, source.media_type))


def _content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """A user message's content: its text, or its parts in order when it holds an image."""
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return list(parts)


def _user(content: list[Any], called: set[str], i: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []  # text and image parts since the last tool result
    for j, block in enumerate(content):
        if isinstance(block, ToolResultBlock):
            if block.tool_use_id not in called:
                raise InvalidRequest(
                    f"tool_result answers {block.tool_use_id!r}, which no earlier tool_use block called",
                    param=f"messages.{i}.content.{j}.tool_use_id",
                )
            if parts:
                out.append({"role": "user", "content": _content(parts)})
                parts = []
            result = f"Error: {block.text}" if block.is_error else block.text
            out.append({"role": "tool", "tool_call_id": block.tool_use_id, "content": result})
        elif block.type == "text":
            parts.append({"type": "text", "text": block.text})
        elif isinstance(block, ImageBlock):
            parts.append(_image(block, f"messages.{i}.content.{j}.source"))
        elif block.type != "redacted_thinking":
            raise InvalidRequest(f"a user message cannot hold {block.type} blocks", param=f"messages.{i}.content.{j}")
    if parts or not out:
        out.append({"role": "user", "content": _content(parts)})
    return out


# -- responses ----------------------------------------------------------------------------------------------


def signature(thinking: str) -> str:
    """A thinking block's signature: stable for the same text (nothing is verified when it comes back)."""
    return "hearth-" + hashlib.sha256(thinking.encode()).hexdigest()[:32]


def content_block(kind: str, text: str, call_id: str = "", name: str = "") -> dict[str, Any]:
    if kind == THINKING:
        return {"type": "thinking", "thinking": text, "signature": signature(text)}
    if kind == TEXT:
        return {"type": "text", "text": text}
    try:
        arguments = json.loads(text or "{}")
    except json.JSONDecodeError:  # a call cut off by max_tokens
        arguments = {}
    return {"type": "tool_use", "id": call_id, "name": name, "input": arguments if isinstance(arguments, dict) else {}}


def stop_reason(finish: Finish, capped: bool) -> str:
    if finish.stop_sequence is not None:
        return "stop_sequence"
    if finish.reason == "length" and capped:
        return "model_context_window_exceeded"
    return STOP_REASONS[finish.reason]


def usage(finish: Finish) -> dict[str, int]:
    body = {"input_tokens": finish.prompt_tokens - finish.cached_tokens, "output_tokens": finish.completion_tokens}
    if finish.cached_tokens:
        body["cache_read_input_tokens"] = finish.cached_tokens
    return body


def message(
    meta: dict[str, Any], content: list[dict[str, Any]], finish: Finish | None, capped: bool, prompt_len: int = 0
) -> dict[str, Any]:
    return {
        **meta,
        "type": "message",
        "role": "assistant",
        "content": content,
        "stop_reason": stop_reason(finish, capped) if finish else None,
        "stop_sequence": finish.stop_sequence if finish else None,
        "usage": usage(finish) if finish else {"input_tokens": prompt_len, "output_tokens": 0},
    }


def step_events(step: Step, blocks: Blocks) -> list[SseEvent]:
    """One content-block step as Anthropic stream events."""
    if isinstance(step, Open):
        start = content_block(step.kind, "", step.call_id, step.name)
        if step.kind == THINKING:
            start["signature"] = ""
        return [("content_block_start", {"type": "content_block_start", "index": step.index, "content_block": start})]
    if isinstance(step, Delta):
        kind, key = DELTAS[blocks.blocks[step.index].kind]
        return [
            (
                "content_block_delta",
                {"type": "content_block_delta", "index": step.index, "delta": {"type": kind, key: step.text}},
            )
        ]
    out: list[SseEvent] = []
    if step.kind == THINKING:
        out.append(
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": step.index,
                    "delta": {"type": "signature_delta", "signature": signature(step.text)},
                },
            )
        )
    out.append(("content_block_stop", {"type": "content_block_stop", "index": step.index}))
    return out


async def respond(runtime: Runtime, req: MessagesRequest) -> dict[str, Any] | AsyncGenerator[bytes, None]:
    """The whole message, or (stream) its events; errors before generation raise (the API's error body)."""
    if req.thread is not None and req.thread is not False:
        raise ThreadUnsupported(
            "this server keeps no message threads: send the whole conversation without 'thread'", param="thread"
        )
    chat = await open_chat(runtime, chat_request(req), fit_context=True)
    capped = chat.run.job.params.max_tokens < req.max_tokens
    meta = {"id": f"msg_{ids.hex_id()}", "model": runtime.model_name}
    blocks = Blocks(thinking=shows_thinking(req))
    if req.stream:
        return sse.named(_stream(chat, blocks, meta, capped))
    finish = await fold(chat, blocks.feed)
    blocks.close()
    content = [content_block(b.kind, b.text, b.call_id, b.name) for b in blocks.blocks]
    return message(meta, content, finish, capped)


async def _stream(chat: Chat, blocks: Blocks, meta: dict[str, Any], capped: bool) -> AsyncGenerator[SseEvent, None]:
    yield (
        "message_start",
        {"type": "message_start", "message": message(meta, [], None, capped, len(chat.run.job.prompt))},
    )
    yield "ping", {"type": "ping"}
    async with aclosing(chat.events()) as events:
        async for event in events:
            if isinstance(event, Error):
                yield "error", error_body(500, event.message)
                return
            if isinstance(event, Finish):
                for step in blocks.close():
                    for item in step_events(step, blocks):
                        yield item
                delta = {"stop_reason": stop_reason(event, capped), "stop_sequence": event.stop_sequence}
                yield "message_delta", {"type": "message_delta", "delta": delta, "usage": usage(event)}
                yield "message_stop", {"type": "message_stop"}
                return
            for step in blocks.feed(event):
                for item in step_events(step, blocks):
                    yield item


async def count_tokens(runtime: Runtime, req: CountTokensRequest) -> dict[str, int]:
    """The prompt's tokens; with images, as a message would take them (checked, each its projector's tokens)."""
    request = chat_request(req)
    if any(m.image_urls for m in request.messages):
        return {"input_tokens": len((await offload.run(prepare, runtime, request, True)).tokens)}
    return {"input_tokens": len(await prompt_tokens(runtime, request))}
