"""The rerank API's paths, one list for the model server and the router: llama.cpp's server, Jina and TEI clients
post to /rerank or /v1/rerank, Cohere's v2 client to /v2/rerank; the body and answer are the same on each."""

from __future__ import annotations

RERANK_PATHS = ("/v1/rerank", "/rerank", "/v2/rerank")
