"""Before anything starts: convert HF folders once (with a progress bar), read each GGUF's sizes, probe the GPU.

The I/O half of planning; stack/plan.py does the arithmetic. Converted files land where `python -m serve` would
put them (serve.models' cache, checked against its record before each use), so the stack and a plain
`python -m serve` share one conversion.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hearth_common.names import MODEL_TYPES
from route.catalog import ModelFacts
from serve.config import CACHE, ServeConfig
from serve.engine.embedder import MAX_SEQS as EMBED_SEQS
from serve.errors import ConfigError as ServeConfigError
from serve.gguf_cache import checked_gguf, convert_cached
from stack.catalog import model_facts
from stack.config import ModelSection, StackConfig
from stack.errors import StartError
from stack.gguf_info import GGUFInfo, InfoError, read_info
from stack.plan import PROCESS_BYTES, ModelNeeds, Plan, compute_bytes, plan_stack, projector_compute_bytes

log = logging.getLogger("stack")


def gguf_for(model: ModelSection, cache: Path = CACHE, progress: bool = True) -> Path:
    """The GGUF to serve: the source itself, or its cached conversion (checked; made now if missing or damaged)."""

    def say(line: str) -> None:
        log.info("%s: %s", model.name, line)

    try:
        if model.source.is_file():
            return checked_gguf(model.source, say=say)
        return convert_cached(model.source, cache, progress=progress, say=say)
    except ServeConfigError as err:
        raise StartError(f"{model.name}: {err}") from None


def sizes_of(model: ModelSection, gguf: Path) -> GGUFInfo:
    try:
        return read_info(gguf)
    except InfoError as err:
        raise StartError(f"{model.name}: {err}") from None


def facts_of(model: ModelSection, gguf: Path, sizes: GGUFInfo) -> ModelFacts | None:
    """The GGUF as Ollama's listings show it (the router's /api/tags, /api/ps); None, with a warning, if unreadable."""
    try:
        return model_facts(gguf, min(model.ctx_size, sizes.n_ctx_train or model.ctx_size))
    except (OSError, ValueError, KeyError) as err:
        log.warning("%s: its GGUF's details for /api/tags not read: %s", model.name, err)
        return None


def model_type(model: ModelSection, sizes: GGUFInfo) -> str:
    return model.model_type or MODEL_TYPES.get(sizes.architecture, "generic")


def gpu_offload() -> bool:
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())


def model_needs(stack: StackConfig, sizes: dict[str, GGUFInfo]) -> list[ModelNeeds]:
    """What each model takes, as serve will run it: the context capped at the model's training context (serve does
    the same). A chat model: KV for ctx x max_concurrent tokens, one micro-batch of prompt_chunk + max_concurrent
    tokens. An embeddings model (serve/engine/embedder.py): one KV stream and one micro-batch of the context rounded up
    to EMBED_SEQS tokens, every one of them through the output head. With an image projector beside it: a micro-batch
    that holds a whole image (serve's min_batch), and the projector's weights and compute buffer."""
    chunk = ServeConfig.model_fields["prompt_chunk"].default
    out = []
    for m in stack.models:
        info = sizes[m.name]
        ctx = min(m.ctx_size, info.n_ctx_train or m.ctx_size)
        if m.embeddings or m.rerank:  # a reranker runs on the same embeddings thread
            batch = -(-ctx // EMBED_SEQS) * EMBED_SEQS
            kv_tokens, ubatch, ctx = batch, batch, batch
        else:
            kv_tokens, ubatch = ctx * m.max_concurrent, chunk + m.max_concurrent
        proj, projector = info.projector, 0
        if proj is not None and not (m.embeddings or m.rerank):
            ubatch = max(ubatch, proj.tokens_per_image)
            projector = proj.total_bytes + projector_compute_bytes(
                proj.image_size, proj.patch_size, proj.n_head, proj.n_ff
            )
        out.append(
            ModelNeeds(
                name=m.name,
                shape=info.shape,
                total_bytes=info.total_bytes,
                n_ctx=kv_tokens,
                kv_type=m.kv_type,
                replicas=m.replicas,
                device_map=m.device_map,
                n_gpu_layers=m.n_gpu_layers,
                host_compute=compute_bytes(ubatch, info.n_vocab, info.n_head, info.n_ff, ctx),
                process=PROCESS_BYTES,
                projector=projector,
            )
        )
    return out


def budgets(stack: StackConfig, free: int | None) -> tuple[int | None, int | None, int]:
    """(VRAM, RAM, reserve) in bytes: VRAM is the stack file's vram_gb, else what the driver says is free."""
    b = stack.budget
    vram = int(b.vram_gb * 2**30) if b and b.vram_gb is not None else free
    ram = int(b.ram_gb * 2**30) if b and b.ram_gb is not None else None
    return vram, ram, int((b.reserve_mb if b else 512) * 2**20)


def make_plan(stack: StackConfig, sizes: dict[str, GGUFInfo], gpu: bool, free: int | None) -> Plan:
    vram, ram, reserve = budgets(stack, free)
    preload = {m.name for m in stack.models if m.preload}
    return plan_stack(model_needs(stack, sizes), preload, vram, ram, gpu, reserve)
