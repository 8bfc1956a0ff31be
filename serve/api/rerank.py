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

Limits: at most MAX_DOCUMENTS documents (Cohere's bound); a document whose pair is longer than the context is cut
to fit, keeping its end token (as CrossEncoder's tokenizer truncates, and Cohere does), and `usage` counts the tokens
scored; a query that leaves no room for a document is a 400 (context_length_exceeded).
"""

from __future__ import annotations

import math
from typing import Any

import llama_cpp as ll
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
        raise ContextLengthExceeded(
            f"the query takes {len(head)} of this model's {embedder.max_tokens} tokens of context, leaving no room "
            "for a document. Please shorten the query.",
            param="query",
        )
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
    inputs, segments = await offload.run(pairs, embedder, req.query, req.documents)
    result = await run_embedding(rt, embedder, inputs, segments)
    raw = [float(v) for v in result.vectors[:, 0]]  # the classifier's first output, as llama.cpp's server reads it
    scores = raw if req.raw_scores else [sigmoid(x) for x in raw]
    answer = body(req, rt.model_name, scores, result.prompt_tokens)
    note_usage(answer["usage"])  # the access line's tokens
    return answer
