"""Before anything starts: convert HF folders once (with a progress bar), read each GGUF's sizes, probe the GPU.

The I/O half of planning; stack/plan.py does the arithmetic. Converted files land where `python -m serve` would
put them (serve.models' cache, checked against its record before each use), so the stack and a plain
`python -m serve` share one conversion.
"""

from __future__ import annotations

from pathlib import Path

from hearth_common.names import MODEL_TYPES
from serve.config import CACHE
from serve.errors import ConfigError as ServeConfigError
from serve.models import checked_gguf, convert_cached
from serve.placement import free_vram
from stack.gguf_info import GGUFInfo, InfoError, read_info
from stack.config import ModelSection, StackConfig
from stack.errors import StartError
from stack.plan import ModelNeeds, Plan, plan


def gguf_for(model: ModelSection, cache: Path = CACHE, progress: bool = True) -> Path:
    """The GGUF to serve: the source itself, or its cached conversion (checked; made now if missing or damaged)."""
    say = lambda line: print(f"stack: {model.name}: {line}", flush=True)  # noqa: E731
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


def model_type(model: ModelSection, sizes: GGUFInfo) -> str:
    return model.model_type or MODEL_TYPES.get(sizes.architecture, "generic")


def gpu_offload() -> bool:
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())


def make_plan(stack: StackConfig, sizes: dict[str, GGUFInfo], gpu: bool, free: int | None) -> Plan:
    """The budget is the stack file's vram_gb, else what the driver says is free."""
    budget = stack.budget.vram_gb if stack.budget and stack.budget.vram_gb is not None else None
    reserve = int((stack.budget.reserve_mb if stack.budget else 512) * 2**20)
    needs = [
        ModelNeeds(
            name=m.name, shape=sizes[m.name].shape, total_bytes=sizes[m.name].total_bytes,
            n_ctx=m.ctx_size * m.max_concurrent, kv_type=m.kv_type, replicas=m.replicas,
            device_map=m.device_map, n_gpu_layers=m.n_gpu_layers,
        )
        for m in stack.models
    ]
    return plan(needs, int(budget * 2**30) if budget is not None else free, gpu, reserve)
