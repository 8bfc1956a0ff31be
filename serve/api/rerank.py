"""POST /v1/rerank (also /rerank, /v2/rerank): a query scored against documents by a cross-encoder (--rerank).

The request is what llama.cpp's server, Jina's and Cohere's clients send: `query`, `documents` (strings, or objects
with `text` as Jina's API takes them), `top_n`, `return_documents`. The answer is llama.cpp's / Jina's / Cohere's
shape: `{"model", "object": "list", "results": [{"index", "relevance_score", "document"?: {"text"}}], "usage":
{"prompt_tokens", "total_tokens"}}`, results sorted by score, highest first (ties by index), cut to `top_n`.

Each document is scored as the pair transformers' tokenizer builds for a cross-encoder: the query as one input
([CLS] query [SEP]) then the document with its own end ([SEP]), the document as token type 1 (the embedder feeds
the types: serve/engine/embedder.py); XLM-R's pair has one more separator and a single token type
(<s> query </s></s> document </s>), which a vocabulary that adds both EOS and SEP asks for. `relevance_score` is sigmoid(logit), what sentence-transformers'
CrossEncoder.predict returns for a one-label model and Cohere's and Jina's APIs return (0..1); `raw_scores: true`
(TEI's name) gives the logit itself, which is what llama.cpp's server returns.

A decoder reranker (Qwen3-Reranker, converted as llama.cpp converts it: convert/archs/qwen3_rerank.py) scores the
prompt of its GGUF's `rerank` template with {query} and {document} filled in, as llama.cpp's server does
(format_prompt_rerank); llama.cpp's graph ends its yes/no head with a softmax, so the first output is P(yes), the
model card's score, and llama.cpp's server returns that as it is. So do we: `relevance_score` is P(yes) (0..1), and
`raw_scores: true` gives log P(yes) - log P(no), the yes-no logit difference (sigmoid of it is the score, as for a
cross-encoder). A prompt longer than the context is cut inside the document, keeping the template's end, as the
card's recipe truncates the instruction/query/document text and keeps its prefix and suffix.

Limits: at most MAX_DOCUMENTS documents (Cohere's bound); a document whose pair is longer than the context is cut
to fit, keeping its end token (as CrossEncoder's tokenizer truncates, and Cohere does), and `usage` counts the tokens
scored; a query that leaves no room for a document is a 400 (context_length_exceeded).
"""

from __future__ import annotations

import math
from typing import Any

import llama_cpp as ll
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from hearth_common.logs import note_usage
from serve.api.embeddings import _run as run_embedding
from serve.chat import offload
from serve.engine.embedder import Embedder
from serve.errors import ContextLengthExceeded
from serve.runtime import Runtime

MAX_DOCUMENTS = 1000  # Cohere's limit on documents in one request


class RerankRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    query: str = Field(min_length=1)
    documents: list[str] = Field(min_length=1, max_length=MAX_DOCUMENTS)
    top_n: int | None = Field(None, ge=1)
    return_documents: bool = False
    raw_scores: bool = False

    @field_validator("documents", mode="before")
    @classmethod
    def _texts(cls, value: Any) -> Any:
        """Jina's {"text": ...} objects -> their text; strings stay; anything else is left for the type check."""
        if isinstance(value, list):
            return [d["text"] if isinstance(d, dict) and isinstance(d.get("text"), str) else d for d in value]
        return value


def no_room(used: int, context: int) -> ContextLengthExceeded:
    return ContextLengthExceeded(
        f"the query takes {used} of this model's {context} tokens of context, leaving no room for a document. "
        "Please shorten the query.",
        param="query",
    )


def pairs(embedder: Embedder, query: str, documents: list[str]) -> tuple[list[list[int]], list[int]]:
    """Each document's pair as token ids, and where its document part (token type 1) starts."""
    model = embedder.model
    head = model.tokenize(query, add_special=True)  # [CLS] query [SEP] (BERT), <s> query </s> (XLM-R)
    bos = ll.llama_vocab_bos(model.vocab)
    add_sep, add_eos = ll.llama_vocab_get_add_sep(model.vocab), ll.llama_vocab_get_add_eos(model.vocab)
    if add_sep and add_eos:  # XLM-R's pair: <s> query </s></s> document </s> (llama.cpp's server's rule too)
        head.append(ll.llama_vocab_sep(model.vocab))
    ends = int(bool(add_sep or add_eos))
    room = embedder.max_tokens - len(head)
    if room < ends + 1:
        raise no_room(len(head), embedder.max_tokens)
    inputs, segments = [], []
    for doc in documents:
        tail = model.tokenize(doc, add_special=True)  # [CLS] document [SEP]: the pair keeps "document [SEP]"
        if tail and tail[0] == bos:
            tail = tail[1:]
        if len(tail) > room:  # cut the document's text, keep its end token
            tail = tail[: room - ends] + tail[len(tail) - ends :]
        inputs.append(head + tail)
        segments.append(len(head))
    return inputs, segments


def prompts(embedder: Embedder, template: str, query: str, documents: list[str]) -> list[list[int]]:
    """Each document's prompt from a decoder reranker's template, as token ids (special tokens parsed, nothing
    added: llama.cpp's server tokenizes the filled template so). The document's text is cut at the end when the
    prompt is longer than the context."""
    model = embedder.model
    head, _, tail = template.partition("{document}")
    head = head.replace("{query}", query)
    # the template's end starts with a special token (<|im_end|>), so the prompt tokenizes as these two parts do
    end = model.tokenize(tail.replace("{query}", query), add_special=False)
    start = len(model.tokenize(head, add_special=False))
    room = embedder.max_tokens - len(end)
    if room < start + 1:
        raise no_room(start + len(end), embedder.max_tokens)
    return [model.tokenize(head + doc, add_special=False)[:room] + end for doc in documents]


def scores(embedder: Embedder, outputs: np.ndarray, raw: bool) -> list[float]:
    """relevance_score from the head's outputs: a cross-encoder's logit through a sigmoid (or the logit), a
    softmax head's P(yes) (or the yes-no logit difference)."""
    first = [float(v) for v in outputs[:, 0]]  # the classifier's first output, as llama.cpp's server reads it
    if not embedder.rank_softmax:
        return first if raw else [sigmoid(x) for x in first]
    if not raw:
        return first
    tiny = float(np.finfo(np.float32).tiny)  # a saturated softmax: a large finite difference, not infinity
    return [math.log(max(p, tiny)) - math.log(max(float(q), tiny)) for p, q in zip(first, outputs[:, 1], strict=True)]


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def body(req: RerankRequest, model: str, scores: list[float], prompt_tokens: int) -> dict[str, Any]:
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[: req.top_n]
    results: list[dict[str, Any]] = []
    for i in order:
        item: dict[str, Any] = {"index": i, "relevance_score": scores[i]}
        if req.return_documents:
            item["document"] = {"text": req.documents[i]}
        results.append(item)
    usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return {"model": model, "object": "list", "results": results, "usage": usage}


async def respond(rt: Runtime, req: RerankRequest) -> dict[str, Any]:
    embedder = rt.require_embedder()
    segments: list[int] | None = None
    if embedder.rank_template is not None:
        inputs = await offload.run(prompts, embedder, embedder.rank_template, req.query, req.documents)
    else:
        inputs, segments = await offload.run(pairs, embedder, req.query, req.documents)
    result = await run_embedding(rt, embedder, inputs, segments)
    answer = body(req, rt.model_name, scores(embedder, result.vectors, req.raw_scores), result.prompt_tokens)
    note_usage(answer["usage"])  # the access line's tokens
    return answer
