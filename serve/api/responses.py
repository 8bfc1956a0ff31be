"""OpenAI Responses (POST /v1/responses) as a translation onto the one chat path.

The request becomes a ChatRequest (`chat_request`) and goes through `open_chat` like a chat completion; the
chat events come back as output items (serve/api/blocks.py): `reasoning` (its text as `reasoning_text` content;
`summary` empty unless `reasoning.summary` asks for one, then the same text as one `summary_text` part), `message` (one `output_text` part), `function_call`; whole, or streamed as Responses
events numbered by `sequence_number`.

Mapping: `instructions` -> the developer instructions (gpt-oss: the harmony developer message; others: the
start of the system message); input messages keep their role, their `input_image` parts (an `image_url` data:
URL) becoming the chat core's image parts in place, which it checks as OpenAI chat's (a `file_id` is refused, an
image in an assistant message too; an image's 400 names `input`); a `reasoning` item rides on the next
assistant message (or call) as its reasoning; `function_call` items are the assistant's tool calls (calls in
a row join one assistant turn), `function_call_output` items tool messages; `reasoning.effort` is the
reasoning level (`xhigh`/`max` -> high); `max_output_tokens` is max_tokens (over the context: 400, as chat);
`text.format` is response_format; `store` keeps the conversation for `previous_response_id`
(serve/api/responses_store.py).
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from serve.api import sse
from serve.api.blocks import CALL, TEXT, THINKING, Block, Blocks, Delta, Open, Step
from serve.api.responses_schemas import (
    FunctionCallItem,
    FunctionCallOutputItem,
    ImagePart,
    MessageItem,
    ReasoningItem,
    ResponsesRequest,
)
from serve.api.responses_store import Messages, Responses
from serve.chat import ids, images
from serve.chat.channels import ANALYSIS, COMMENTARY
from serve.chat.core import Chat, ChatEvent, Error, Finish, fold, open_chat
from serve.chat.schemas import ChatRequest
from serve.errors import InvalidRequest
from serve.runtime import Runtime

SseEvent = tuple[str, dict[str, Any]]
ITEM_PREFIX = {THINKING: "rs", TEXT: "msg", CALL: "fc"}


class PreviousResponseNotFound(InvalidRequest):
    code = "previous_response_not_found"


async def history(store: Responses, req: ResponsesRequest) -> Messages:
    if req.previous_response_id is None:
        return []
    messages = await store.fetch(req.previous_response_id)
    if messages is None:
        raise PreviousResponseNotFound(
            f"Previous response with id {req.previous_response_id!r} not found: stored responses (store: true) are "
            f"kept {store.where}",
            param="previous_response_id",
        )
    return messages


def input_messages(req: ResponsesRequest, earlier: Messages) -> Messages:
    """The input items as chat messages (after `earlier`, the stored conversation)."""
    called = {c["id"] for m in earlier for c in m.get("tool_calls") or ()}
    out: Messages = []
    reasoning = ""
    for i, item in enumerate(req.input):
        if isinstance(item, ReasoningItem):
            reasoning = "\n\n".join(filter(None, (reasoning, item.text)))
        elif isinstance(item, MessageItem):
            message: dict[str, Any] = {"role": item.role, "content": _content(item, i)}
            if item.role == "assistant" and reasoning:
                message["reasoning_content"], reasoning = reasoning, ""
            out.append(message)
        elif isinstance(item, FunctionCallItem):
            call = {
                "id": item.call_id,
                "type": "function",
                "function": {"name": item.name, "arguments": item.arguments},
            }
            called.add(item.call_id)
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant" and not reasoning:
                last.setdefault("tool_calls", []).append(call)
            else:
                message = {"role": "assistant", "content": "", "tool_calls": [call]}
                if reasoning:
                    message["reasoning_content"], reasoning = reasoning, ""
                out.append(message)
        elif isinstance(item, FunctionCallOutputItem):
            if item.call_id not in called:
                raise InvalidRequest(
                    f"function_call_output answers {item.call_id!r}, which no earlier function_call made",
                    param=f"input.{i}.call_id",
                )
            out.append({"role": "tool", "tool_call_id": item.call_id, "content": item.text})
    return out


def _content(item: MessageItem, i: int) -> str | list[dict[str, Any]]:
    """A message's text, or its parts in order when it holds an image (the chat core's image parts)."""
    if not item.has_images:
        return item.text
    if item.role == "assistant":
        raise InvalidRequest("an assistant message cannot hold input_image parts", param=f"input.{i}.content")
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(item.content):
        if not isinstance(part, ImagePart):
            parts.append({"type": "text", "text": part.value})
        elif part.image_url is None:
            raise InvalidRequest(
                "file_id images are not supported by this server (it keeps no files); send image_url as a data: URL"
                if part.file_id
                else "an input_image needs its image_url (a data: URL)",
                param=f"input.{i}.content.{j}",
            )
        else:
            parts.append(images.part(part.image_url))
    return parts


def chat_request(req: ResponsesRequest, messages: Messages) -> ChatRequest:
    body: dict[str, Any] = {
        "model": req.model,
        "messages": messages,
        "reasoning": req.level,
        "developer_instructions": req.instructions,
        "max_tokens": req.max_output_tokens,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "stream": req.stream,
        "user": req.user,
        "parallel_tool_calls": req.parallel_tool_calls,
    }
    if req.tools:
        # `strict` is an API flag (Responses sets it by default), not part of the tool the model reads; our grammar
        # holds calls to the schema either way.
        body["tools"] = [
            {"type": "function", "function": t.model_dump(exclude={"type", "strict"}, exclude_none=True)}
            for t in req.tools
        ]
    if req.tool_choice is not None:
        choice = req.tool_choice
        body["tool_choice"] = (
            choice if isinstance(choice, str) else {"type": "function", "function": {"name": choice.name}}
        )
    fmt = req.text.format if req.text else None
    if fmt is not None and fmt.type != "text":
        body["response_format"] = {"type": fmt.type}
        if fmt.type == "json_schema":
            body["response_format"]["json_schema"] = {"name": fmt.name, "schema": fmt.schema_, "strict": fmt.strict}
    try:
        return ChatRequest.model_validate(body)
    except ValidationError as err:  # what the chat path refuses beyond our own checks (a bad schema, bad arguments)
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]).replace("function.", "")
        raise InvalidRequest(f"{where}: {first['msg']}", param=where) from None


# -- output ---------------------------------------------------------------------------------------------------


@dataclass
class Output:
    """Output items of one response, built from content blocks; item ids are fixed when a block opens."""

    summary: bool = False  # reasoning items carry their text as a summary too (reasoning.summary was asked)
    ids: list[str] = field(default_factory=list)

    def open(self, kind: str) -> str:
        self.ids.append(f"{ITEM_PREFIX[kind]}_{ids.hex_id()}")
        return self.ids[-1]

    def item(self, index: int, block: Block, status: str = "completed") -> dict[str, Any]:
        item_id = self.ids[index]
        if block.kind == THINKING:
            summary = [_summary_part(block.text)] if self.summary else []
            return {"type": "reasoning", "id": item_id, "summary": summary, "content": [_part(THINKING, block.text)]}
        if block.kind == TEXT:
            return {
                "type": "message",
                "id": item_id,
                "status": status,
                "role": "assistant",
                "content": [_part(TEXT, block.text)],
            }
        return {
            "type": "function_call",
            "id": item_id,
            "call_id": block.call_id,
            "name": block.name,
            "arguments": block.text,
            "status": status,
        }


def _part(kind: str, text: str) -> dict[str, Any]:
    if kind == THINKING:
        return {"type": "reasoning_text", "text": text}
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _summary_part(text: str) -> dict[str, Any]:
    return {"type": "summary_text", "text": text}


def wants_summary(req: ResponsesRequest) -> bool:
    return req.reasoning is not None and req.reasoning.summary is not None


def usage(finish: Finish) -> dict[str, Any]:
    reasoning = sum(finish.channel_tokens.get(c, 0) for c in (ANALYSIS, COMMENTARY))
    return {
        "input_tokens": finish.prompt_tokens,
        "input_tokens_details": {"cached_tokens": finish.cached_tokens},
        "output_tokens": finish.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": finish.prompt_tokens + finish.completion_tokens,
    }


def response_object(
    req: ResponsesRequest,
    meta: dict[str, Any],
    status: str,
    output: list[dict[str, Any]],
    finish: Finish | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    choice = req.tool_choice
    fmt = req.text.format if req.text else None
    return {
        **meta,
        "object": "response",
        "status": status,
        "error": {"code": "server_error", "message": error} if error else None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": req.instructions,
        "max_output_tokens": req.max_output_tokens,
        "output": output,
        "parallel_tool_calls": req.parallel_tool_calls,
        "previous_response_id": req.previous_response_id,
        "reasoning": {
            "effort": req.reasoning.effort if req.reasoning else None,
            "summary": req.reasoning.summary if req.reasoning else None,
        },
        "store": req.store,
        "temperature": req.temperature,
        "text": {"format": fmt.model_dump(by_alias=True, exclude_none=True) if fmt else {"type": "text"}},
        "tool_choice": (choice if isinstance(choice, str) else choice.model_dump()) if choice else "auto",
        "tools": [t.model_dump() for t in req.tools or ()],
        "top_p": req.top_p,
        "truncation": "disabled",
        "usage": usage(finish) if finish else None,
        "user": req.user,
        "metadata": req.metadata or {},
    }


def final_status(finish: Finish) -> str:
    return "incomplete" if finish.reason == "length" else "completed"


def conversation(messages: Messages, blocks: Blocks) -> Messages:
    """The conversation to store: the request's messages and the answer as one assistant message."""
    answer: dict[str, Any] = {"role": "assistant", "content": "".join(b.text for b in blocks.blocks if b.kind == TEXT)}
    thinking = "\n\n".join(b.text for b in blocks.blocks if b.kind == THINKING)
    if thinking:
        answer["reasoning_content"] = thinking
    calls = [
        {"id": b.call_id, "type": "function", "function": {"name": b.name, "arguments": b.text or "{}"}}
        for b in blocks.blocks
        if b.kind == CALL
    ]
    if calls:
        answer["tool_calls"] = calls
    return [*messages, answer]


async def respond(runtime: Runtime, req: ResponsesRequest) -> dict[str, Any] | AsyncGenerator[bytes, None]:
    """The whole response, or (stream) its events; errors before generation raise (the API's error body)."""
    store = runtime.responses
    earlier = await history(store, req)
    messages = earlier + input_messages(req, earlier)
    try:
        chat = await open_chat(runtime, chat_request(req, messages))
    except InvalidRequest as err:
        if err.param and err.param.startswith("messages"):  # the chat core's name for what Responses calls input
            err.param = "input"
        raise
    response_id = f"resp_{ids.hex_id()}"
    meta = {"id": response_id, "created_at": int(time.time()), "model": runtime.model_name}

    async def keep(blocks: Blocks) -> None:  # awaited before the answer ends: a continuation sent then finds it
        if req.store:
            await store.save(response_id, conversation(messages, blocks))

    if req.stream:
        return sse.named(_stream(chat, req, meta, keep))
    blocks, output = Blocks(), Output(wants_summary(req))

    def add(event: ChatEvent) -> None:
        for step in blocks.feed(event):
            if isinstance(step, Open):
                output.open(step.kind)

    finish = await fold(chat, add)
    blocks.close()
    status = final_status(finish)
    last = len(blocks.blocks) - 1
    items = [output.item(i, b, status if i == last else "completed") for i, b in enumerate(blocks.blocks)]
    await keep(blocks)
    return response_object(req, meta, status, items, finish)


@dataclass
class _Events:
    """Responses stream events, numbered."""

    seq: int = 0

    def __call__(self, kind: str, **fields: Any) -> SseEvent:
        event = (kind, {"type": kind, "sequence_number": self.seq, **fields})
        self.seq += 1
        return event


def _step_events(step: Step, blocks: Blocks, output: Output, event: _Events, status: str) -> list[SseEvent]:
    if isinstance(step, Open):
        item_id = output.open(step.kind)
        block = blocks.blocks[step.index]
        item = output.item(step.index, block, "in_progress")
        at = {"item_id": item_id, "output_index": step.index}
        if step.kind == CALL:
            return [event("response.output_item.added", output_index=step.index, item=item)]
        item["content"] = []
        opened = [
            event("response.output_item.added", output_index=step.index, item=item),
            event("response.content_part.added", **at, content_index=0, part=_part(step.kind, "")),
        ]
        if step.kind == THINKING and output.summary:
            item["summary"] = []
            opened.append(event("response.reasoning_summary_part.added", **at, summary_index=0, part=_summary_part("")))
        return opened
    item_id = output.ids[step.index]
    at = {"item_id": item_id, "output_index": step.index}
    block = blocks.blocks[step.index]
    if isinstance(step, Delta):
        if block.kind == CALL:
            return [event("response.function_call_arguments.delta", **at, delta=step.text)]
        if block.kind == THINKING:
            deltas = [event("response.reasoning_text.delta", **at, content_index=0, delta=step.text)]
            if output.summary:
                deltas.append(event("response.reasoning_summary_text.delta", **at, summary_index=0, delta=step.text))
            return deltas
        return [event("response.output_text.delta", **at, content_index=0, delta=step.text, logprobs=[])]
    done = output.item(step.index, block, status)
    if step.kind == CALL:
        return [
            event("response.function_call_arguments.done", **at, name=block.name, arguments=step.text),
            event("response.output_item.done", output_index=step.index, item=done),
        ]
    text_done = (
        event("response.reasoning_text.done", **at, content_index=0, text=step.text)
        if step.kind == THINKING
        else event("response.output_text.done", **at, content_index=0, text=step.text, logprobs=[])
    )
    closed = [text_done, event("response.content_part.done", **at, content_index=0, part=_part(step.kind, step.text))]
    if step.kind == THINKING and output.summary:
        closed += [
            event("response.reasoning_summary_text.done", **at, summary_index=0, text=step.text),
            event("response.reasoning_summary_part.done", **at, summary_index=0, part=_summary_part(step.text)),
        ]
    return [*closed, event("response.output_item.done", output_index=step.index, item=done)]


async def _stream(
    chat: Chat, req: ResponsesRequest, meta: dict[str, Any], keep: Callable[[Blocks], Awaitable[None]]
) -> AsyncGenerator[SseEvent, None]:
    event, blocks, output = _Events(), Blocks(), Output(wants_summary(req))
    yield event("response.created", response=response_object(req, meta, "in_progress", []))
    yield event("response.in_progress", response=response_object(req, meta, "in_progress", []))
    async with aclosing(chat.events()) as events:
        async for chat_event in events:
            if isinstance(chat_event, Error):
                yield event("error", code="server_error", message=chat_event.message, param=None)
                items = [output.item(i, b, "incomplete") for i, b in enumerate(blocks.blocks)]
                yield event(
                    "response.failed", response=response_object(req, meta, "failed", items, error=chat_event.message)
                )
                return
            if isinstance(chat_event, Finish):
                status = final_status(chat_event)
                for step in blocks.close():
                    for item in _step_events(step, blocks, output, event, status):
                        yield item
                items = [
                    output.item(i, b, status if i == len(blocks.blocks) - 1 else "completed")
                    for i, b in enumerate(blocks.blocks)
                ]
                await keep(blocks)
                yield event(f"response.{status}", response=response_object(req, meta, status, items, chat_event))
                return
            for step in blocks.feed(chat_event):
                for item in _step_events(step, blocks, output, event, "completed"):
                    yield item
