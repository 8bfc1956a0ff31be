"""Ollama's API (POST /api/chat, /api/generate) as a translation onto the chat core; /api/embed and
/api/embeddings are serve/api/ollama_embed.py, /api/show serve/api/ollama_show.py.

A chat or generate request becomes a ChatRequest (`chat_request`, `generate_request`) and goes through
`open_chat` like an OpenAI chat request (`raw` generate: a CompletionRequest through `plain_chat`); the chat
events come back as Ollama's objects: one whole object (`stream: false`), or, by default, newline-delimited JSON,
one object a line, the last with `done: true`, `done_reason` and the counters.

Mapping:
- `think`: absent or true -> medium, "low"/"medium"/"high" -> that level, the thinking in `thinking`
  (`message.thinking` for chat); false -> `none` (thinking off where the template can) and any thinking the model
  does anyway is dropped. An explicit `think` on a model that does not think is a 400, as Ollama answers.
- `options`: num_predict -> max_tokens (a cap: lowered to the context's room; 0 or below: no cap),
  temperature, top_p, top_k (0 or below: off), min_p, seed (below 0: random), stop, repeat_penalty,
  presence_penalty, frequency_penalty; anything else (num_ctx and the other load-time options, mirostat, ...) is
  ignored, never an error. Values are checked as the chat path checks them (a 400 names `options.KEY`).
- `format`: "json" -> json_object, a JSON schema -> json_schema (the grammar holds the answer to it).
- `tools` are OpenAI-style functions; calls come back as `message.tool_calls[].function.arguments` objects,
  each whole in one line of a stream. A turn that called a tool ends with done_reason `stop`, as Ollama's does.
- History: assistant `tool_calls` (object arguments) and `thinking` ride on the turn; `role: tool` results name
  their call by `tool_call_id` or, as Ollama clients send them, by `tool_name` (the earliest unanswered call of
  that name, else the earliest unanswered call).
- generate: `system` is a system message and `prompt` one user message; `raw` sends the prompt as is, no
  template (legacy completions: no thinking, no format). `template` and `context` are ignored; a non-empty
  `suffix` (fill-in-the-middle) is refused with a 400, as are `images` with `raw`. An empty prompt (chat: no
  messages) answers at once with done_reason `load` (`unload` with keep_alive 0), as Ollama's preload call does.
- `images` (base64, on a chat message or a generate request) -> the chat core's image parts ahead of the
  message's text, as Ollama places them; the format is read from the bytes, and the core checks them as OpenAI
  chat's (a model without a projector: 400 "this model does not take images").
- Durations are nanoseconds on this server: total from the request's arrival, prompt_eval up to the first
  event, eval from there to the end; load_duration is 0 (the model was loaded before the server answered).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from hearth_common.ollama_errors import error_line
from serve.api.blocks import CALL, TEXT, THINKING, Blocks, Close, Delta, Open, Step
from serve.api.ollama_schemas import ChatBody, GenerateBody, Message
from serve.chat import images
from serve.chat.core import Chat, ChatEvent, Error, Finish, Text, fold, open_chat, plain_chat
from serve.chat.schemas import ChatRequest, CompletionRequest
from serve.chat.tools.formats import FORMATS, NamedId
from serve.errors import InvalidRequest
from serve.runtime import Runtime

Body = dict[str, Any]

DONE_REASONS = {"stop": "stop", "length": "length", "tool_calls": "stop"}
# Ollama's option -> the chat path's field
OPTIONS = {
    "num_predict": "max_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "seed": "seed",
    "stop": "stop",
    "repeat_penalty": "repeat_penalty",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}
# a chat path field's name in an error -> the Ollama field the client wrote
PLACES = {
    **{v: f"options.{k}" for k, v in OPTIONS.items()},
    "response_format": "format",
    "reasoning": "think",
}
INT32_MAX = 2**31 - 1


def created_at() -> str:
    """Now, RFC3339 in UTC (Ollama's `created_at`)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- requests -----------------------------------------------------------------------------------------------


def sampling(options: dict[str, Any] | None) -> Body:
    """The chat path's sampling fields from Ollama's `options`, read as Ollama reads them; unknown keys dropped."""
    out = {OPTIONS[k]: v for k, v in (options or {}).items() if k in OPTIONS and v is not None}
    if type(out.get("max_tokens")) is int and out["max_tokens"] <= 0:  # -1 (infinite), -2 (fill the context)
        del out["max_tokens"]
    if type(out.get("seed")) is int:  # below 0 is a random seed; llama.cpp's seed is 32 bits
        out["seed"] = None if out["seed"] < 0 else out["seed"] % 2**32
    if type(out.get("top_k")) is int:
        out["top_k"] = min(max(out["top_k"], 0), INT32_MAX)
    return out


def reasoning(think: bool | str | None) -> tuple[str, bool]:
    """(the reasoning level, whether the thinking is returned) for Ollama's `think`."""
    if think is False:
        return "none", False
    if think is None or think is True:
        return "medium", True
    return think, True


def response_format(fmt: str | dict[str, Any] | None) -> Body | None:
    if not fmt:
        return None
    if fmt == "json":
        return {"type": "json_object"}
    return {"type": "json_schema", "json_schema": {"name": "format", "schema": fmt}}


def call_id(message: int, call: int) -> str:
    """An id for a history call the client sent without one: 9 letters and digits, as every template takes."""
    return f"c{message:04d}{call:04d}"[:9]


def content(text: str, pictures: list[str] | None) -> str | list[Body]:
    """A message's content: its text, or (images) the images' parts ahead of the text, as Ollama places them."""
    if not pictures:
        return text
    return [*(images.part(images.data_url(p)) for p in pictures), {"type": "text", "text": text}]


def chat_messages(messages: list[Message], named_id: NamedId | None = None) -> list[Body]:
    """Ollama's history as the chat path's messages. A call sent without an id gets one: the model's own form where
    its format numbers the conversation's calls (`named_id`: Kimi K2's `functions.NAME:N`), else call_id's."""
    out: list[Body] = []
    pending: list[tuple[str, str]] = []  # (id, name) of the calls no tool result has answered yet
    calls = 0  # the conversation's calls so far, as the chat core counts them (history_calls)
    for i, m in enumerate(messages):
        message: Body = {"role": m.role, "content": content(m.content or "", m.images)}
        if m.role == "assistant":
            if m.thinking:
                message["reasoning_content"] = m.thinking
            if m.tool_calls:
                ids = [
                    c.id or (named_id(c.function.name, calls + j) if named_id else call_id(i, j))
                    for j, c in enumerate(m.tool_calls)
                ]
                calls += len(m.tool_calls)
                pending += [(cid, c.function.name) for cid, c in zip(ids, m.tool_calls, strict=True)]
                message["tool_calls"] = [
                    {
                        "id": cid,
                        "type": "function",
                        "function": {"name": c.function.name, "arguments": c.function.arguments},
                    }
                    for cid, c in zip(ids, m.tool_calls, strict=True)
                ]
        elif m.role == "tool":
            message["tool_call_id"] = m.tool_call_id or _answers(pending, m.tool_name) or call_id(i, 0)
            if m.tool_name:
                message["name"] = m.tool_name
        out.append(message)
    return out


def _answers(pending: list[tuple[str, str]], name: str | None) -> str | None:
    """The call a result without an id answers: the earliest unanswered one of its name, else the earliest."""
    at = next((k for k, (_, n) in enumerate(pending) if n == name), 0 if pending else None)
    return None if at is None else pending.pop(at)[0]


def _validated(model: type[BaseModel], body: Body) -> Any:
    """`body` as the chat path's request; a refusal names the field as the Ollama client wrote it."""
    try:
        return model.model_validate(body)
    except ValidationError as err:
        first = err.errors()[0]
        loc = [str(p) for p in first["loc"]]
        if loc:
            loc[0] = PLACES.get(loc[0], loc[0])
        where = ".".join(loc) or "body"
        raise InvalidRequest(f"{where}: {str(first['msg']).removeprefix('Value error, ')}", param=where) from None


def _check_think(runtime: Runtime, req: ChatBody | GenerateBody) -> None:
    if req.think not in (None, False) and not runtime.require_loaded().template.thinks:
        raise InvalidRequest(f"{req.model!r} does not support thinking", param="think")


def chat_request(runtime: Runtime, req: ChatBody) -> tuple[ChatRequest, bool]:
    """The ChatRequest the chat core runs, and whether the answer shows the thinking."""
    _check_think(runtime, req)
    level, shown = reasoning(req.think)
    named_id = FORMATS[runtime.require_loaded().template.tool_support.format].named_id
    body: Body = {
        "messages": chat_messages(req.messages, named_id),
        "reasoning": level,
        "response_format": response_format(req.format),
        **sampling(req.options),
    }
    if req.tools:
        body["tools"] = req.tools
    return _validated(ChatRequest, body), shown


def generate_request(runtime: Runtime, req: GenerateBody) -> tuple[ChatRequest | CompletionRequest, bool]:
    if req.suffix:
        raise InvalidRequest(
            "suffix (fill-in-the-middle) is not supported by this server: send the prompt alone", param="suffix"
        )
    if req.raw:
        if req.images:
            raise InvalidRequest("images cannot be used with raw: a raw prompt has no place for them", param="images")
        if req.format:
            raise InvalidRequest("format cannot be used with raw: the raw prompt gets no grammar", param="format")
        return _validated(CompletionRequest, {"prompt": req.prompt, **sampling(req.options)}), False
    _check_think(runtime, req)
    level, shown = reasoning(req.think)
    messages = [{"role": "system", "content": req.system}] if req.system else []
    body: Body = {
        "messages": [*messages, {"role": "user", "content": content(req.prompt, req.images)}],
        "reasoning": level,
        "response_format": response_format(req.format),
        **sampling(req.options),
    }
    return _validated(ChatRequest, body), shown


# -- answers ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """One piece of an answer: thinking or content text, or a whole tool call (Ollama's shape)."""

    kind: str  # THINKING, TEXT or CALL
    text: str = ""
    call: Body | None = None


@dataclass
class Parts:
    """Chat events -> Parts, the same for a stream (each Part a line) and a whole answer (the Parts joined).

    Text goes through Blocks (serve/api/blocks.py: trimmed, thinking dropped unless shown); a second block of
    one kind (text after a call) starts with a blank line. `trim=False` (raw generate) passes text as it is."""

    blocks: Blocks
    trim: bool = True
    calls: int = 0
    _seen: set[str] = field(default_factory=set)
    _gap: str = ""

    def feed(self, event: ChatEvent) -> list[Part]:
        if not self.trim:
            return [Part(TEXT, event.text)] if isinstance(event, Text) and event.text else []
        return self._parts(self.blocks.feed(event))

    def close(self) -> list[Part]:
        return self._parts(self.blocks.close())

    def _parts(self, steps: list[Step]) -> list[Part]:
        out: list[Part] = []
        for step in steps:
            if isinstance(step, Open) and step.kind != CALL:
                self._gap = "\n\n" if step.kind in self._seen else ""
                self._seen.add(step.kind)
            elif isinstance(step, Delta) and self.blocks.blocks[step.index].kind != CALL:
                out.append(Part(self.blocks.blocks[step.index].kind, self._gap + step.text))
                self._gap = ""
            elif isinstance(step, Close) and step.kind == CALL:
                out.append(Part(CALL, call=self._call(step)))
        return out

    def _call(self, step: Close) -> Body:
        try:
            arguments = json.loads(step.text or "{}")
        except json.JSONDecodeError:  # a call cut off by num_predict
            arguments = {}
        index, self.calls = self.calls, self.calls + 1
        args = arguments if isinstance(arguments, dict) else {}
        return {"id": step.call_id, "function": {"index": index, "name": step.name, "arguments": args}}


@dataclass
class Answer:
    """A whole answer: the Parts joined."""

    thinking: str = ""
    content: str = ""
    calls: list[Body] = field(default_factory=list)

    def add(self, parts: list[Part]) -> None:
        for part in parts:
            if part.kind == THINKING:
                self.thinking += part.text
            elif part.kind == TEXT:
                self.content += part.text
            elif part.call is not None:
                self.calls.append(part.call)


@dataclass
class Clock:
    """The durations Ollama reports, in nanoseconds."""

    start: float = field(default_factory=time.perf_counter)
    first: float | None = None

    def tick(self) -> None:
        if self.first is None:
            self.first = time.perf_counter()

    def counts(self, finish: Finish) -> Body:
        end = time.perf_counter()
        first = self.first or end
        return {
            "total_duration": ns(end - self.start),
            "load_duration": 0,
            "prompt_eval_count": finish.prompt_tokens,
            "prompt_eval_duration": ns(first - self.start),
            "eval_count": finish.completion_tokens,
            "eval_duration": ns(end - first),
        }


def ns(seconds: float) -> int:
    return max(0, int(seconds * 1e9))


# A body's answer fields: (content, thinking, calls) -> chat's `message` or generate's `response`/`thinking`.
Shape = Callable[[str, str, list[Body]], Body]


def chat_shape(content: str, thinking: str, calls: list[Body]) -> Body:
    message: Body = {"role": "assistant", "content": content}
    if thinking:
        message["thinking"] = thinking
    if calls:
        message["tool_calls"] = calls
    return {"message": message}


def generate_shape(content: str, thinking: str, calls: list[Body]) -> Body:
    return {"response": content, **({"thinking": thinking} if thinking else {})}


def part_body(shape: Shape, part: Part) -> Body:
    if part.kind == THINKING:
        return shape("", part.text, [])
    if part.kind == TEXT:
        return shape(part.text, "", [])
    return shape("", "", [part.call] if part.call else [])


async def _answer(
    chat: Chat, parts: Parts, shape: Shape, model: str, clock: Clock, stream: bool
) -> Body | AsyncGenerator[bytes, None]:
    if stream:
        return _lines(chat, parts, shape, model, clock)
    answer = Answer()

    def add(event: ChatEvent) -> None:
        clock.tick()
        answer.add(parts.feed(event))

    finish = await fold(chat, add)
    answer.add(parts.close())
    return {
        "model": model,
        "created_at": created_at(),
        **shape(answer.content, answer.thinking, answer.calls),
        "done": True,
        "done_reason": DONE_REASONS[finish.reason],
        **clock.counts(finish),
    }


def _line(body: Body) -> bytes:
    return json.dumps(body).encode() + b"\n"


async def _lines(chat: Chat, parts: Parts, shape: Shape, model: str, clock: Clock) -> AsyncGenerator[bytes, None]:
    def line(fields: Body, done: bool = False) -> bytes:
        return _line({"model": model, "created_at": created_at(), **fields, "done": done})

    async with aclosing(chat.events()) as events:
        async for event in events:
            clock.tick()
            if isinstance(event, Error):
                yield error_line(event.message)
                return
            if isinstance(event, Finish):
                out = b"".join(line(part_body(shape, p)) for p in parts.close())
                end = {**shape("", "", []), "done_reason": DONE_REASONS[event.reason], **clock.counts(event)}
                yield out + line(end, done=True)
                return
            for part in parts.feed(event):
                yield line(part_body(shape, part))


def _loaded(model: str, shape: Shape, keep_alive: Any) -> Body:
    """Ollama's answer to a request with nothing to generate: it (un)loads the model and says so."""
    unload = keep_alive in (0, "0", "0s", "0m")
    return {
        "model": model,
        "created_at": created_at(),
        **shape("", "", []),
        "done": True,
        "done_reason": "unload" if unload else "load",
    }


async def chat(runtime: Runtime, req: ChatBody) -> Body | AsyncGenerator[bytes, None]:
    """POST /api/chat: the whole answer, or (stream, the default) its NDJSON lines."""
    clock = Clock()
    if not req.messages:
        runtime.require_loaded()
        return _loaded(req.model, chat_shape, req.keep_alive)
    request, shown = chat_request(runtime, req)
    opened = await open_chat(runtime, request, fit_context=True)
    return await _answer(opened, Parts(Blocks(thinking=shown)), chat_shape, req.model, clock, req.stream)


async def generate(runtime: Runtime, req: GenerateBody) -> Body | AsyncGenerator[bytes, None]:
    """POST /api/generate: the whole answer, or (stream, the default) its NDJSON lines."""
    clock = Clock()
    if not req.prompt:
        generate_request(runtime, req)  # still refuses what it would refuse
        runtime.require_loaded()
        return _loaded(req.model, generate_shape, req.keep_alive)
    request, shown = generate_request(runtime, req)
    if isinstance(request, CompletionRequest):
        opened = await plain_chat(runtime, request)
        parts = Parts(Blocks(thinking=False), trim=False)
    else:
        opened = await open_chat(runtime, request, fit_context=True)
        parts = Parts(Blocks(thinking=shown))
    return await _answer(opened, parts, generate_shape, req.model, clock, req.stream)
