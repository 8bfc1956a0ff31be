"""The chat path, API-neutral: a validated ChatRequest in, structured events out.

Every chat API (OpenAI chat completions here; Anthropic Messages and OpenAI Responses are translations onto
the same path) goes through `open_chat` and reads the same events:

    chat = await open_chat(runtime, req)  # render (in a worker thread when big), grammar, admit; raises
                                          # ServeError (400, 429, 503) before anything is generated
    async for event in chat.events():   # leaving early (client gone) cancels the generation
        ...

Events, in order: any number of `Text`, `ToolCallStart` and `ToolCallArgs`, then exactly one `Finish` or
`Error`.
- `Text(channel, text)`: `analysis` and `commentary` are thinking; `final` is the answer, outside any call.
  No format marker (harmony tokens, `<think>`, call markup) is ever in `text`.
- `ToolCallStart(index, id, name)`: a call begins (index 0, 1, ... in this answer; id unique, non-empty; Kimi K2's
  `functions.NAME:N`, N counting the conversation's calls, as its template names them).
- `ToolCallArgs(index, text)`: the next fragment of that call's arguments; a call's fragments join into
  its arguments' JSON text. Fragments arrive as the model generates them.
- `Finish(reason, prompt_tokens, completion_tokens, channel_tokens, cached_tokens, stop_sequence)`: reason
  `stop`, `length` or `tool_calls` (the answer called a tool and ended); channel_tokens counts per channel plus
  `tool_calls`; cached_tokens the prompt tokens the prompt cache supplied; stop_sequence the request's stop
  string that ended it, if one did.
- `Error(message)`: generation failed after it started.

`fold(chat, add)` is the one loop of a whole (non-streamed) response: every event to `add`, the Finish returned;
`collect(chat)` folds into a `ChatResult`. `chat.level` is the
reasoning level the template got (`none` when thinking was switched off), `chat.raw` the generated text as
is (for renderers that show it inline), `chat.logprobs` each token's log-probability so far when the request
asked for them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import Any

from hearth_common.logs import note
from serve.chat import image_fetch, images, offload
from serve.chat.answer_grammar import build as build_answer_grammar
from serve.chat.budget import think_budget
from serve.chat.channels import CHANNELS, FINAL, ChannelParser, Event as ChannelEvent, Format, Thinking
from serve.chat.prompts import TEMPLATE_LEVELS, template_messages
from serve.chat.schemas import IMAGE_MARKER, ChatRequest, CompletionRequest, Sampling
from serve.chat.tools import grammar as tool_grammar
from serve.chat.tools.events import CallArgs, CallParser, CallStart, Content, Tools
from serve.chat.tools.formats import FORMATS, NamedId, ToolFormat
from serve.chat.tools.harmony import HarmonyCalls
from serve.chat.tools.request import ToolRequest, tool_request
from serve.chat.turn import Turn
from serve.engine.context import EngineError
from serve.engine.engine import Failed, Piece, SamplingParams, TokenLogprob
from serve.engine.grammar import Grammar
from serve.engine.vision import ImageError, ImageSpan
from serve.errors import ContextLengthExceeded, InvalidRequest, ServeError, ShuttingDown
from serve.runtime import Run, Runtime

# The call events are the tool parsers' own (serve/chat/tools/events.py), passed on unchanged.
ToolCallStart = CallStart
ToolCallArgs = CallArgs


@dataclass(frozen=True)
class Text:
    channel: str  # analysis, commentary or final
    text: str


@dataclass(frozen=True)
class Finish:
    reason: str  # stop, length or tool_calls
    prompt_tokens: int
    completion_tokens: int
    channel_tokens: dict[str, int] = field(default_factory=dict)
    cached_tokens: int = 0
    stop_sequence: str | None = None
    interrupted: bool = False  # the server stopped mid-answer: a stream ends as it is, a whole answer is a 503


@dataclass(frozen=True)
class Error:
    message: str
    shutting_down: bool = False  # the server stopped before generating: the client may retry elsewhere

    @property
    def code(self) -> str:
        """The error code a stream's error event carries."""
        return "shutting_down" if self.shutting_down else "generation_failed"


ChatEvent = Text | ToolCallStart | ToolCallArgs | Finish | Error


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str = ""


@dataclass
class ChatResult:
    """A whole generation: each channel's text (in CHANNELS order), the calls, how it ended."""

    texts: dict[str, str] = field(default_factory=dict)
    calls: list[ToolCall] = field(default_factory=list)
    finish: Finish | None = None

    def add(self, event: ChatEvent) -> None:
        if isinstance(event, Text):
            self.texts[event.channel] = self.texts.get(event.channel, "") + event.text
        elif isinstance(event, CallStart):
            self.calls.append(ToolCall(event.id, event.name))
        elif isinstance(event, CallArgs):
            self.calls[event.index].arguments += event.text
        elif isinstance(event, Finish):
            self.finish = event

    def text(self, channel: str) -> str:
        return self.texts.get(channel, "").strip()

    @property
    def channels(self) -> dict[str, str]:
        """Channel -> stripped text, for the channels that have any, in CHANNELS order."""
        return {c: self.text(c) for c in CHANNELS if self.text(c)}


async def fold(chat: Chat, add: Callable[[ChatEvent], object]) -> Finish:
    """A whole (non-streamed) response: every event before the end goes to `add`, the Finish is returned. An
    Error raises ServeError (nothing has been sent yet, so it is the API's error body)."""
    async with aclosing(chat.events()) as events:
        async for event in events:
            if isinstance(event, Error):
                raise ShuttingDown(event.message) if event.shutting_down else ServeError(event.message)
            if isinstance(event, Finish):
                if event.interrupted:  # nothing has been sent: better retried elsewhere than cut short
                    raise ShuttingDown("the server is shutting down; the answer was not finished")
                return event
            add(event)
    raise ServeError("generation ended without a result")


async def collect(chat: Chat) -> ChatResult:
    result = ChatResult()
    result.finish = await fold(chat, result.add)
    return result


def sampling_params(
    req: Sampling, prompt_len: int, ctx: int, grammar: Grammar | None = None, fit_context: bool = False
) -> SamplingParams:
    """The engine's parameters for a request; a prompt that leaves no room in the context is a 400, and so is a
    max_tokens beyond the room unless `fit_context` lowers it to the room (Anthropic's max_tokens is a cap)."""
    if prompt_len == 0:  # nothing to condition on: llama.cpp cannot decode an empty batch
        raise InvalidRequest("the prompt is empty", param="prompt")
    room = ctx - prompt_len
    if room <= 0 or (req.max_tokens is not None and req.max_tokens > room and not fit_context):
        # OpenAI's wording: LangChain, crewAI and others look for "maximum context length" or the code.
        want = req.max_tokens or 1
        where = "messages" if isinstance(req, ChatRequest) else "prompt"
        raise ContextLengthExceeded(
            f"This model's maximum context length is {ctx} tokens. However, you requested {prompt_len + want} "
            f"tokens ({prompt_len} in the {where}, {want} in the completion). Please reduce the length of the "
            f"{where} or completion.",
            param=where,
        )
    return SamplingParams(
        max_tokens=min(req.max_tokens or room, room),
        temperature=req.temperature,
        top_p=req.top_p,
        top_k=req.top_k,
        min_p=req.min_p,
        repeat_penalty=req.repeat_penalty,
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        seed=req.seed,
        stops=req.stops,
        grammar=grammar,
        cache_prompt=req.cache_prompt,
        logprobs=req.logprob_count,
    )


async def prompt_tokens(runtime: Runtime, req: ChatRequest) -> list[int]:
    """The prompt a request would get, as token ids (for token counting endpoints); nothing is admitted."""
    return await offload.run(lambda: runtime.tokenize_prompt(_render(runtime, req)[1]))


def _render(runtime: Runtime, req: ChatRequest) -> tuple[ToolRequest | None, str]:
    loaded = runtime.require_loaded()
    tools = tool_request(req)
    if tools and req.response_format and req.response_format.type != "text":
        raise InvalidRequest(
            "response_format cannot be combined with tool calls; use tool_choice none or drop one",
            param="response_format",
        )
    return tools, loaded.template.render(
        template_messages(req.messages), req.reasoning, req.developer_instructions, tools, req.chat_template_kwargs
    )


@dataclass(frozen=True)
class Prepared:
    tokens: list[int]
    params: SamplingParams
    generation: Generation
    level: str
    images: tuple[ImageSpan, ...] = ()


def request_images(runtime: Runtime, req: ChatRequest) -> list[bytes]:
    """The request's images in prompt order, each checked (serve/chat/images.py); InvalidRequest names the problem."""
    found = [(i, url) for i, m in enumerate(req.messages) for url in m.image_urls]
    if not found:
        return []
    if not runtime.require_loaded().vision:
        raise InvalidRequest("this model does not take images (it has no image projector)", param="messages")
    c = runtime.config
    limits = images.Limits(c.max_images, c.max_image_bytes, c.max_image_pixels)
    if len(found) > limits.max_images:
        raise InvalidRequest(f"{len(found)} images; at most {limits.max_images} a request", param="messages")
    out = []
    for i, url in found:
        try:
            out.append(images.from_data_url(url, limits).data)
        except images.ImageRefused as err:
            raise InvalidRequest(str(err), param=f"messages.{i}.content") from None
    return out


async def fetch_images(runtime: Runtime, req: ChatRequest) -> None:
    """Remote image URLs on the allowed hosts become data: URLs in place (serve/chat/image_fetch.py), fetched
    together; the rest is `request_images`' business (a model without images, too many, a host not allowed)."""
    c = runtime.config
    parts = [
        (i, p) for i, m in enumerate(req.messages) for p in m.image_parts if image_fetch.is_remote(p.image_url.url)
    ]
    if not parts or not c.image_url_hosts or not runtime.require_loaded().vision or len(parts) > c.max_images:
        return

    async def one(i: int, url: str) -> str:
        try:
            return await image_fetch.fetch(url, c.image_url_hosts, c.max_image_bytes, c.image_url_timeout)
        except images.ImageRefused as err:
            raise InvalidRequest(str(err), param=f"messages.{i}.content") from None

    urls = await asyncio.gather(*(one(i, p.image_url.url) for i, p in parts))
    for (_, part), url in zip(parts, urls, strict=True):
        part.image_url.url = url


async def open_chat(runtime: Runtime, req: ChatRequest, fit_context: bool = False) -> Chat:
    """Render, build the grammar, admit. Raises before any generation: InvalidRequest (400), QueueFull (429),
    Loading (503). `fit_context`: a max_tokens beyond the context's room is lowered to it (sampling_params).
    Rendering and tokenizing run in a worker thread for a big request (serve/chat/offload.py): a long conversation
    would hold every other request."""
    await fetch_images(runtime, req)
    ready = await offload.run(prepare, runtime, req, fit_context)
    return Chat(runtime.start(ready.tokens, ready.params, ready.images), ready.generation, ready.level)


async def plain_chat(runtime: Runtime, req: CompletionRequest) -> Chat:
    """A legacy completion: the prompt as is (no template), every generated piece the answer (no channels)."""
    loaded = runtime.require_loaded()
    tokens = await offload.run(loaded.model.tokenize, req.prompt, True)
    params = sampling_params(req, len(tokens), loaded.engine.ctx_per_seq)
    return Chat(runtime.start(tokens, params), Generation(None), "none")


def prepare(runtime: Runtime, req: ChatRequest, fit_context: bool = False) -> Prepared:
    """Everything before admission (render, tokenize, grammar, parsers); touches no shared state."""
    tools, prompt = _render(runtime, req)
    loaded = runtime.require_loaded()
    template = loaded.template
    thinking = template.thinking(prompt)
    grammar: Grammar | None
    if tools:
        grammar = tool_grammar.build(tools, template.tool_support.format, thinking, template.think_tags)
    else:
        grammar = build_answer_grammar(req.response_format, template.format, thinking is not Thinking.NONE)
    if grammar is not None:
        try:
            loaded.engine.check_grammar(grammar)
        except EngineError:
            where = "tools" if tools else "response_format"
            raise InvalidRequest(f"llama.cpp refused the grammar made from {where}'s schema", param=where) from None
    pictures = request_images(runtime, req)
    spans: tuple[ImageSpan, ...] = ()
    if pictures:
        if prompt.count(IMAGE_MARKER) != len(pictures):
            raise InvalidRequest(f"the messages' text must not hold the image marker {IMAGE_MARKER}", param="messages")
        try:
            tokenized = runtime.tokenize_with_images(prompt, pictures)
        except ImageError as err:
            raise InvalidRequest(str(err), param="messages") from None
        tokens, spans = tokenized.ids, tokenized.images
        if spans and spans[-1].end >= len(tokens):
            raise InvalidRequest("the prompt must not end with an image", param="messages")
    else:
        tokens = runtime.tokenize_prompt(prompt)
    params = sampling_params(req, len(tokens), loaded.engine.ctx_per_seq, grammar, fit_context)
    forced_answer = grammar is not None and (tools is None or tools.choice != "auto")
    sealed = grammar is not None and not tools  # the answer, once begun, is the answer (its `<think>` is text)
    budget = think_budget(
        req.thinking_budget_tokens,
        thinking,
        forced_answer,
        params.max_tokens,
        tools is not None,
        template.think_tags,
        sealed=sealed,
    )
    if budget is not None:
        params = replace(params, think_budget=budget)
    level = (
        "none"
        if req.reasoning == "none" and thinking is Thinking.NONE and template.thinks
        else TEMPLATE_LEVELS[req.reasoning]
    )
    fmt = template.tool_support.format if tools else None
    # with a response_format grammar the answer, once begun, is the answer to its end (`<think>` in a string is text)
    parser = ChannelParser.for_output(template.format, thinking, answer_grammar=sealed)
    calls_before = history_calls(req.messages)
    generation = Generation(parser, fmt, tools=tools.tools if tools else None, calls_before=calls_before)
    return Prepared(tokens, params, generation, level, spans)


def history_calls(messages: list[Any]) -> int:
    """The calls the request's history holds (validated messages), counted as Kimi K2's template counts them."""
    return sum(len(m.tool_calls or ()) for m in messages)


@dataclass
class Generation:
    """Engine text in, chat events out: the pure part of a chat (no engine, no I/O), so it is tested alone.

    Pieces go through the channel parser; with tools, the answer's text goes through the format's call
    parser (or, harmony, addressed messages become calls). Without a parser (legacy completions) every piece is
    the answer's text."""

    parser: ChannelParser | None
    tool_format: ToolFormat | None = None
    new_id: Any = None  # overrides the format's id maker (tests make ids deterministic)
    tools: Tools | None = None  # the request's tools (parsers of XML-style and pythonic calls type values by them)
    calls_before: int = 0  # the calls in the request's history (Kimi K2's ids number the conversation's calls)
    turn: Turn = field(init=False)
    _markup: CallParser | None = field(init=False, default=None)  # calls written in the answer text
    _harmony: HarmonyCalls | None = field(init=False, default=None)  # calls as harmony messages
    _called: bool = field(init=False, default=False)
    _named_id: NamedId | None = field(init=False, default=None)  # the format's own ids (FormatInfo.named_id)

    def __post_init__(self) -> None:
        fmt = self.tool_format
        self.turn = Turn(self.parser, calls_active=fmt is ToolFormat.HARMONY)
        if fmt is None:
            return
        info = FORMATS[fmt]
        self._named_id = info.named_id
        if fmt is ToolFormat.HARMONY:
            self._harmony = HarmonyCalls(self.new_id or info.new_id)
        else:
            self._markup = info.parser(self.new_id, self.tools)

    def piece(self, piece: str) -> list[ChatEvent]:
        """One token's text (possibly empty)."""
        if self.parser is None:
            self.turn.feed(piece)
            return [Text(FINAL, piece)] if piece else []
        before, was_in_call = self.turn.channel, self._in_call()
        if self._markup and self.parser.format is not Format.HARMONY:
            out = _merged(self._think_with_calls(piece))
        else:
            out = self._route(self.turn.feed(piece))
        calling = was_in_call or self._in_call() or any(isinstance(e, CallStart | CallArgs) for e in out)
        self.turn.count(piece, before, as_call=calling)
        return out

    def _think_with_calls(self, piece: str) -> list[ChatEvent]:
        """Character by character, so that inside a call's JSON `<think>` is text of the arguments (never the start
        of thinking), whatever the split."""
        out: list[ChatEvent] = []
        for c in piece:
            if self._markup and self._markup.in_json and not (self.parser and self.parser.holding):
                self.turn.feed_raw(c)
                out += self._from_markup(self._markup.feed(c))
            else:
                out += self._route(self.turn.feed(c))
        return out

    def end(
        self,
        reason: str,
        prompt_tokens: int,
        completion_tokens: int,
        cached_tokens: int = 0,
        stop_sequence: str | None = None,
    ) -> list[ChatEvent]:
        """The engine's end (reason stop, length, cancelled or shutdown): what was held back, then the Finish."""
        out = self._route(self.turn.finish())
        if self._markup:
            out += self._from_markup(self._markup.finish())
        why = "length" if reason == "length" else "tool_calls" if self._called else "stop"
        counts = {c: n for c, n in self.turn.channel_tokens.items() if n}
        cut = reason == "shutdown"
        return [*out, Finish(why, prompt_tokens, completion_tokens, counts, cached_tokens, stop_sequence, cut)]

    def _in_call(self) -> bool:
        return bool(self._markup and self._markup.in_call) or self.turn.in_addressed_message

    def _route(self, events: list[ChannelEvent]) -> list[ChatEvent]:
        routed: list[ChannelEvent | CallStart | CallArgs] = list(
            self._harmony.feed(events) if self._harmony else events
        )
        out: list[ChatEvent] = []
        for e in routed:
            if isinstance(e, CallStart | CallArgs):
                self._called = True
                out.append(e)
            elif e.channel == FINAL and self._markup:
                out += self._from_markup(self._markup.feed(e.text))
            else:
                out.append(Text(e.channel, e.text))
        return out

    def _from_markup(self, events: list[Any]) -> list[ChatEvent]:
        out: list[ChatEvent] = []
        for e in events:
            if isinstance(e, Content):
                out.append(Text(FINAL, e.text))
            else:
                self._called = True
                if isinstance(e, CallStart) and self._named_id is not None:  # the id Kimi's templates would write
                    e = CallStart(e.index, self._named_id(e.name, self.calls_before + e.index), e.name)
                out.append(e)
        return out


def _merged(events: list[ChatEvent]) -> list[ChatEvent]:
    """Neighbouring text of one channel, and neighbouring argument fragments of one call, as one event."""
    out: list[ChatEvent] = []
    for e in events:
        last = out[-1] if out else None
        if isinstance(e, Text) and isinstance(last, Text) and last.channel == e.channel:
            out[-1] = Text(e.channel, last.text + e.text)
        elif isinstance(e, CallArgs) and isinstance(last, CallArgs) and last.index == e.index:
            out[-1] = CallArgs(e.index, last.text + e.text)
        else:
            out.append(e)
    return out


@dataclass
class Chat:
    run: Run
    generation: Generation
    level: str
    # each generated token's log-probability, in order, when the request asked for them (logprobs)
    logprobs: list[TokenLogprob] = field(default_factory=list)

    @property
    def turn(self) -> Turn:
        return self.generation.turn

    @property
    def raw(self) -> str:
        return self.generation.turn.raw

    async def events(self) -> AsyncGenerator[ChatEvent, None]:
        async with aclosing(self.run.events()) as stream:
            async for event in stream:
                if isinstance(event, Piece):
                    if event.logprob is not None:
                        self.logprobs.append(event.logprob)
                    for e in self.generation.piece(event.text):
                        yield e
                elif isinstance(event, Failed):
                    yield Error(event.message, event.shutting_down)
                    return
                else:
                    note(prompt_tokens=event.prompt_tokens, completion_tokens=event.completion_tokens)  # access line
                    for e in self.generation.end(
                        event.reason,
                        event.prompt_tokens,
                        event.completion_tokens,
                        event.cached_tokens,
                        event.stop_sequence,
                    ):
                        yield e
                    return
