"""POST /v1/embeddings: OpenAI's request and response over the embeddings thread (serve/engine/embedder.py).

The request's `input` comes in OpenAI's four shapes (a string, strings, token ids, lists of token ids); texts
are tokenized with the model's own special tokens (what the GGUF says to add), token ids are taken as they are.
Each input must fit the context, and an answer holds one L2-normalized vector per input, as floats or as base64
of little-endian float32 (what the `openai` SDK asks for whenever numpy is installed). `dimensions` keeps the
first N components before normalizing (Matryoshka-trained models such as Qwen3-Embedding are meant for that).
Admission is the generation path's: the scheduler's running set and bounded queue (429 beyond it).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from hearth_common.logs import note_usage
from serve.chat import offload
from serve.engine.embedder import Embedded, Embedder, EmbedEvent, EmbedJob, Stopped
from serve.engine.engine import Failed
from serve.errors import ContextLengthExceeded, InvalidRequest, ServeError, ShuttingDown
from serve.runtime import Runtime

MAX_INPUTS = 2048  # OpenAI's limit on inputs in one request
INPUT_SHAPES = "a string, a list of strings, a list of token ids, or a list of lists of token ids"


def parse_input(value: Any) -> list[str] | list[list[int]]:
    """OpenAI's four shapes of `input` -> a list of texts or a list of token-id lists. Raises ValueError."""
    if isinstance(value, str):
        items: list[Any] = [value]
    elif isinstance(value, list) and value and all(type(v) is int for v in value):
        items = [value]
    elif isinstance(value, list):
        items = value
    else:
        raise ValueError(f"input must be {INPUT_SHAPES}")
    if not items:
        raise ValueError("input must not be empty")
    if len(items) > MAX_INPUTS:
        raise ValueError(f"input holds {len(items)} items; at most {MAX_INPUTS} are allowed")
    if all(isinstance(v, str) for v in items):
        if any(not v for v in items):
            raise ValueError("input must not contain an empty string")
        return items
    if all(isinstance(v, list) and all(type(t) is int for t in v) for v in items):
        if any(not v for v in items):
            raise ValueError("input must not contain an empty list of token ids")
        return items
    raise ValueError(f"input must be {INPUT_SHAPES}, not a mix")


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    input: list[str] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _input(cls, value: Any) -> list[str] | list[list[int]]:
        return parse_input(value)


def finish(pooled: np.ndarray, dimensions: int | None) -> np.ndarray:
    """The first `dimensions` components of each row, scaled to unit length (a zero row stays zero)."""
    rows = pooled[:, :dimensions] if dimensions else pooled
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return (rows / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def encode(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()


def body(vectors: np.ndarray, encoding_format: str, model: str, prompt_tokens: int) -> dict[str, Any]:
    data = [{"object": "embedding", "index": i, "embedding": encode(v, encoding_format)} for i, v in enumerate(vectors)]
    usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return {"object": "list", "data": data, "model": model, "usage": usage}


def tokenize(embedder: Embedder, items: list[str] | list[list[int]]) -> list[list[int]]:
    """Texts -> token ids with the model's special tokens; checks every input's length and ids."""
    model = embedder.model
    inputs = [model.tokenize(v, add_special=True) if isinstance(v, str) else v for v in items]
    for i, tokens in enumerate(inputs):
        if not tokens:
            raise InvalidRequest(f"input {i} has no tokens", param="input")
        if len(tokens) > embedder.max_tokens:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {embedder.max_tokens} tokens, however you requested "
                f"{len(tokens)} tokens in input {i}. Please reduce the length of the input.",
                param="input",
            )
        if isinstance(items[i], list) and (bad := [t for t in tokens if not 0 <= t < model.n_vocab]):
            raise InvalidRequest(
                f"input {i}: token id {bad[0]} is outside the vocabulary (0..{model.n_vocab - 1})", param="input"
            )
    return inputs


async def respond(rt: Runtime, req: EmbeddingRequest) -> dict[str, Any]:
    embedder = rt.require_embedder()
    if req.dimensions is not None and req.dimensions > embedder.n_embd:
        raise InvalidRequest(f"dimensions must be at most {embedder.n_embd}, this model's size", param="dimensions")
    inputs = await offload.run(tokenize, embedder, req.input)  # tokenizing is llama.cpp work too
    result = await _run(rt, embedder, inputs)
    answer = body(finish(result.vectors, req.dimensions), req.encoding_format, rt.model_name, result.prompt_tokens)
    note_usage(answer["usage"])  # the access line's tokens
    return answer


async def _run(rt: Runtime, embedder: Embedder, inputs: list[list[int]], segments: list[int] | None = None) -> Embedded:
    """Admit the job, wait for its vectors; leaving early cancels it (or gives up its queue place). `segments`: a
    reranker's pairs, where each input's second segment starts (serve/api/rerank.py)."""
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[EmbedEvent] = loop.create_future()

    def release() -> None:
        for nxt in rt.scheduler.release(job, time.perf_counter() - job.created):
            assert isinstance(nxt, EmbedJob)
            embedder.submit(nxt)
        rt.gauges()

    def deliver(event: EmbedEvent) -> None:
        release()
        if not answer.done():
            answer.set_result(event)

    def emit(event: EmbedEvent) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone (shutdown): nobody is listening
            loop.call_soon_threadsafe(deliver, event)

    job = EmbedJob(inputs, emit, segments=segments)
    if rt.scheduler.submit(job):
        embedder.submit(job)
    rt.gauges()
    try:
        event = await answer
    except asyncio.CancelledError:
        embedder.cancel(job)  # a running job is dropped before the next batch and released then
        if job in rt.scheduler.waiting:
            release()
        raise
    if isinstance(event, Stopped):
        raise ShuttingDown(event.message)
    if isinstance(event, Failed):
        raise ServeError(event.message)
    return event
