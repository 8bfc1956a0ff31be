"""A llama.cpp context over a loaded model: the settings the decode engine and the embedder share, set in one
place (threads, flash attention, KV element type) beside the sizes each passes in."""

from __future__ import annotations

import os
from typing import Any

import llama_cpp as ll

KV_TYPES = {"f16": ll.GGML_TYPE_F16, "q8_0": ll.GGML_TYPE_Q8_0, "q4_0": ll.GGML_TYPE_Q4_0}


class EngineError(Exception):
    """The model could not be loaded or a context could not be created."""


def new_context(
    model_ptr: Any,
    *,
    n_ctx: int,
    n_batch: int,
    n_seq_max: int,
    kv_unified: bool,
    threads: int | None,
    flash_attn: bool,
    kv_type: str,
    what: str,
    **extra: Any,
) -> Any:
    """A new context (raises EngineError when llama.cpp cannot make one); `extra`: further context parameters
    (embeddings, pooling_type, swa_full)."""
    params = ll.llama_context_default_params()
    params.n_ctx = n_ctx
    params.n_batch = params.n_ubatch = n_batch
    params.n_seq_max = n_seq_max
    params.kv_unified = kv_unified
    params.n_threads = params.n_threads_batch = threads or os.cpu_count() or 1
    # llama.cpp needs flash attention for a quantized V cache.
    params.flash_attn_type = 1 if flash_attn or kv_type != "f16" else 0
    params.type_k = params.type_v = KV_TYPES[kv_type]
    params.no_perf = True
    for name, value in extra.items():
        setattr(params, name, value)
    ctx = ll.llama_init_from_model(model_ptr, params)
    if not ctx:
        raise EngineError(f"llama.cpp could not create {what} (out of memory?)")
    return ctx
