"""Mixture-of-experts checkpoints stored one tensor per expert -> llama.cpp's one 3-D tensor per projection.

HF releases (Qwen3-MoE, ...) store `model.layers.{b}.mlp.experts.{e}.{gate,up,down}_proj.weight`, each a matrix;
llama.cpp wants `blk.{b}.ffn_{gate,up,down}_exps.weight` of shape [experts, rows, cols]. The stacked tensor is
never built in memory: where the experts' bytes go out unchanged the writer copies their file ranges one after
the other in the kernel; otherwise the producer yields expert after expert (each as row blocks, converted on the
way). Either way the peak stays near one expert's block, whatever the layer's size.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import replace

import numpy as np
from gguf import MODEL_TENSOR, TENSOR_NAMES, GGMLQuantizationType

from convert.arch import Arch, Config, OutTensor, Plan
from convert.errors import ShapeError, UnsupportedError
from convert.plan import (
    SAME_BYTES,
    _order,
    check_complete,
    default_plan,
    nbytes_of,
    normalize_name,
    producer,
    weight_type,
)
from convert.source import Checkpoint, TensorRef

EXPERT = re.compile(
    r"^model\.layers\.(?P<bid>\d+)\.mlp\.experts\.(?P<e>\d+)\.(?P<proj>gate_proj|up_proj|down_proj)\.weight$"
)
PROJECTIONS = {
    "gate_proj": MODEL_TENSOR.FFN_GATE_EXP,
    "up_proj": MODEL_TENSOR.FFN_UP_EXP,
    "down_proj": MODEL_TENSOR.FFN_DOWN_EXP,
}


def stacked_producer(
    refs: list[TensorRef], qtype: GGMLQuantizationType, config: Config
) -> Callable[[], Iterator[np.ndarray]]:
    """Each expert's bytes in turn (row blocks of one expert at a time)."""
    parts = [producer(ref, qtype, None, config) for ref in refs]

    def produce() -> Iterator[np.ndarray]:
        for part in parts:
            yield from part()

    return produce


def plan_stacked_experts(arch: Arch, ckpt: Checkpoint, config: Config, out_type: str, *, n_experts: int,
                         shapes: dict[str, tuple[int, int]]) -> Plan:  # fmt: skip
    """default_plan for everything but the experts, plus one stacked tensor per layer and projection.

    `shapes` is each projection's (rows, cols) as config.json implies it, checked on every expert."""
    experts: dict[tuple[int, str, int], TensorRef] = {}
    rest: dict[str, TensorRef] = {}
    for name, ref in ckpt.tensors.items():
        norm = normalize_name(arch, name)
        m = EXPERT.match(norm) if norm is not None else None
        if m:
            experts[int(m["bid"]), m["proj"], int(m["e"])] = ref
        else:
            rest[name] = ref
    stacked = set(PROJECTIONS.values())
    plan = default_plan(replace(arch, required=tuple(t for t in arch.required if t not in stacked)),
                        replace(ckpt, tensors=rest), config, out_type)  # fmt: skip
    tensors = list(plan.tensors)
    n_blocks = int(config["num_hidden_layers"])
    for bid in range(n_blocks):
        for proj, kind in PROJECTIONS.items():
            refs = [experts.pop((bid, proj, e), None) for e in range(n_experts)]
            if missing := [e for e, r in enumerate(refs) if r is None]:
                raise ShapeError(
                    f"layer {bid} lacks {proj} of experts {', '.join(map(str, missing[:8]))} ({n_experts} expected)"
                )
            present = [r for r in refs if r is not None]
            for r in present:
                if r.shape != shapes[proj]:
                    raise ShapeError(
                        f"tensor {r.name} has shape {list(r.shape)} but config.json implies {list(shapes[proj])}"
                    )
                if r.dtype not in SAME_BYTES or r.dtype != present[0].dtype:
                    raise UnsupportedError(
                        f"tensor {r.name} has dtype {r.dtype}; experts must share one of F32/F16/BF16"
                    )
            shape = (n_experts, *shapes[proj])
            qtype = weight_type(shape, out_type)
            name = TENSOR_NAMES[kind].format(bid=bid) + ".weight"
            unchanged = tuple(present) if SAME_BYTES[present[0].dtype] == qtype else ()
            produce = stacked_producer(present, qtype, config)
            tensors.append(OutTensor(name, shape, qtype, nbytes_of(shape, qtype), produce, sources=unchanged))
    if experts:
        extra = sorted(ref.name for ref in experts.values())
        raise ShapeError(
            f"{len(extra)} expert tensors beyond config.json's {n_experts} experts or {n_blocks} layers: {', '.join(extra[:8])}"
        )
    check_complete(arch, n_blocks, {t.name for t in tensors})
    tensors.sort(key=lambda t: _order(t.name))
    return Plan(arch, plan.config, tensors, plan.meta)
