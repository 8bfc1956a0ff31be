"""Ollama's embeddings (POST /api/embed, and the older /api/embeddings) over the embeddings thread
(serve/engine/embedder.py), admitted as /v1/embeddings is (serve/api/embeddings.py).

- /api/embed: `input` a string or strings; one L2-normalized vector an input, as Ollama normalizes here;
  `dimensions` keeps the first N components before normalizing; `truncate` (default true) cuts an input over the
  context to it, false refuses it (400). An empty input answers `embeddings: []` (Ollama's preload call).
- /api/embeddings: `prompt` -> `embedding`, the pooled vector as the model gives it, not normalized, as Ollama's
  own answer is.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from hearth_common.logs import note_usage
from serve.api.embeddings import MAX_INPUTS, _run as run_embedding, finish as normalized
from serve.api.ollama import Clock, ns
from serve.api.ollama_schemas import EmbedBody, EmbeddingsBody
from serve.chat import offload
from serve.engine.embedder import Embedder
from serve.errors import ContextLengthExceeded, InvalidRequest
from serve.runtime import Runtime

Body = dict[str, Any]


def _tokens(embedder: Embedder, texts: list[str], truncate: bool) -> list[list[int]]:
    """Texts -> token ids with the model's special tokens; one over the context is cut to it (`truncate`, keeping
    a closing special token, which last-token pooling reads) or refused."""
    model, limit = embedder.model, embedder.max_tokens
    out = []
    for i, text in enumerate(texts):
        tokens = model.tokenize(text, add_special=True)
        if not tokens:
            raise InvalidRequest(f"input {i} has no tokens", param="input")
        if len(tokens) > limit:
            if not truncate:
                raise ContextLengthExceeded(
                    f"input {i} exceeds maximum context length ({len(tokens)} tokens, at most {limit}); "
                    "send truncate: true to cut it",
                    param="input",
                )
            tokens = [*tokens[: limit - 1], tokens[-1]] if model.is_control(tokens[-1]) else tokens[:limit]
        out.append(tokens)
    return out


async def _vectors(runtime: Runtime, texts: list[str], truncate: bool) -> tuple[np.ndarray, int]:
    embedder = runtime.require_embedder()
    if len(texts) > MAX_INPUTS:
        raise InvalidRequest(f"input holds {len(texts)} items; at most {MAX_INPUTS} are allowed", param="input")
    if any(not t for t in texts):
        raise InvalidRequest("input must not contain an empty string", param="input")
    inputs = await offload.run(_tokens, embedder, texts, truncate)
    result = await run_embedding(runtime, embedder, inputs)
    note_usage({"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens})  # the access line
    return result.vectors, result.prompt_tokens


async def embed(runtime: Runtime, req: EmbedBody) -> Body:
    """POST /api/embed."""
    clock = Clock()
    texts = [req.input] if isinstance(req.input, str) else req.input
    if not req.input:  # Ollama's preload call: nothing to embed
        runtime.require_embedder()
        return {"model": req.model, "embeddings": []}
    embedder = runtime.require_embedder()
    if req.dimensions is not None and req.dimensions > embedder.n_embd:
        raise InvalidRequest(f"dimensions must be at most {embedder.n_embd}, this model's size", param="dimensions")
    pooled, tokens = await _vectors(runtime, texts, req.truncate)
    end = time.perf_counter()
    return {
        "model": req.model,
        "embeddings": normalized(pooled, req.dimensions).tolist(),
        "total_duration": ns(end - clock.start),
        "load_duration": 0,
        "prompt_eval_count": tokens,
    }


async def embeddings(runtime: Runtime, req: EmbeddingsBody) -> Body:
    """POST /api/embeddings (Ollama's older call)."""
    if not req.prompt:
        runtime.require_embedder()
        return {"embedding": []}
    pooled, _ = await _vectors(runtime, [req.prompt], truncate=True)
    return {"embedding": pooled[0].astype(np.float32).tolist()}
