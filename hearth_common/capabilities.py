"""What a model does, as /v1/models lists it in `capabilities`: one vocabulary for the model server, the router's
listing, the registration body and the stack's catalog.

`chat` (the chat, completions, messages and responses endpoints), `embeddings` (/v1/embeddings, --embeddings),
`rerank` (/v1/rerank, --rerank), `vision` (a chat model that takes images). Ollama's /api/show says the same in its
own words (completion, embedding, vision, plus tools and thinking: serve/api/ollama_show.py).
"""

from __future__ import annotations

from typing import Literal

Capability = Literal["chat", "embeddings", "rerank", "vision"]
ORDER: tuple[Capability, ...] = ("chat", "embeddings", "rerank", "vision")


def capabilities(*, embeddings: bool = False, rerank: bool = False, vision: bool = False) -> list[Capability]:
    """A server's: a reranker or an embeddings server does that alone; a chat server may take images too."""
    if rerank:
        return ["rerank"]
    if embeddings:
        return ["embeddings"]
    return ["chat", "vision"] if vision else ["chat"]


def union(lists: list[list[Capability]]) -> list[Capability]:
    """What several servers of one model name do between them, in the vocabulary's order."""
    have = {c for caps in lists for c in caps}
    return [c for c in ORDER if c in have]
