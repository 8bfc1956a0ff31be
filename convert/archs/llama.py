"""Llama and Mistral (GGUF arch `llama`).

HF stores q/k rows in the "rotate half" order; llama.cpp's llama graph applies rope to interleaved pairs,
so each head's rows are permuted (first half / second half -> interleaved), as llama.cpp's converter does.
Llama 3.1+ rope scaling ("llama3") has no metadata key in llama.cpp: the per-frequency factors are written
as the tensor rope_freqs.weight, computed here from the config.

Idefics3 / SmolVLM (Idefics3ForConditionalGeneration, SmolVLMForConditionalGeneration) keep a Llama (SmolLM2) text
model under model.text_model.* with its hyperparameters in text_config: converted as llama from there, the vision
tower and connector left to the projector (convert.archs.idefics3_vision).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
from gguf import MODEL_ARCH, MODEL_TENSOR, TENSOR_NAMES, GGMLQuantizationType

from convert.arch import Arch, Config, OutTensor, Plan, Transform
from convert.archs.common import DENSE_BLOCK, check_rope, common_meta, dense_shapes, head_dim, rope_scaling, rope_theta
from convert.plan import default_plan
from convert.source import Checkpoint


def unrotate(x: np.ndarray, config: Config) -> np.ndarray:
    """Within each head: rows [2, hd/2] -> [hd/2, 2]. Blocks hold whole heads (see `align`)."""
    hd = head_dim(config)
    return x.reshape(-1, 2, hd // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)


ROPE_PERMUTE = Transform(unrotate, align=head_dim)


def llama3_rope_factors(config: Config) -> np.ndarray | None:
    """Per rotary frequency, the divisor Llama 3.1's rope scaling applies (None without that scaling)."""
    params = rope_scaling(config)
    if str(params.get("rope_type") or params.get("type") or "").lower() != "llama3":
        return None
    dim = head_dim(config)
    base = float(params.get("rope_theta") or rope_theta(config) or 10000.0)
    freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    factor = float(params.get("factor", 8.0))
    low, high = float(params.get("low_freq_factor", 1.0)), float(params.get("high_freq_factor", 4.0))
    old_ctx = float(params.get("original_max_position_embeddings", 8192))
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < old_ctx / high:
            out.append(1.0)
        elif wavelen > old_ctx / low:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def plan_llama(arch: Arch, ckpt: Checkpoint, config: Config, out_type: str) -> Plan:
    plan = default_plan(arch, ckpt, config, out_type)
    factors = llama3_rope_factors(config)
    if factors is None:
        return plan

    def produce() -> Iterator[np.ndarray]:
        yield factors

    rope = OutTensor(
        TENSOR_NAMES[MODEL_TENSOR.ROPE_FREQS] + ".weight",
        factors.shape,
        GGMLQuantizationType.F32,
        factors.nbytes,
        produce,
    )
    return Plan(plan.arch, plan.config, [*plan.tensors, rope], plan.meta)


LLAMA = Arch(
    hf_names=("LlamaForCausalLM", "MistralForCausalLM"),
    gguf_arch=MODEL_ARCH.LLAMA,
    meta=common_meta(),
    transforms={MODEL_TENSOR.ATTN_Q: ROPE_PERMUTE, MODEL_TENSOR.ATTN_K: ROPE_PERMUTE},
    shapes=dense_shapes(),
    required=(*DENSE_BLOCK, MODEL_TENSOR.FFN_NORM),
    plan=plan_llama,
    check=lambda c: check_rope(c, also=("llama3",)),
)

IDEFICS3 = replace(
    LLAMA,
    hf_names=("Idefics3ForConditionalGeneration", "SmolVLMForConditionalGeneration"),
    rename=(("model.text_model.", "model."),),
    skip_prefixes=("model.vision_model.", "model.connector."),
    text_config="text_config",
)

ARCHS = (LLAMA, IDEFICS3)
