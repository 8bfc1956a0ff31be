"""Phi-3 and Phi-4 (Phi3ForCausalLM -> GGUF arch `phi3`).

llama.cpp's phi3 graph takes the fused tensors as they are: `qkv_proj` as attn_qkv (q rows, then k, then v)
and `gate_up_proj` as ffn_up (gate rows first; llama.cpp's SwiGLU takes the first half as the gate, as
transformers' chunk(2) does). Rope is NEOX-style, over the first head_dim * partial_rotary_factor dimensions
(Phi-4-mini rotates 3/4 of each head).

LongRoPE (Phi-3-*-128k, Phi-3.5, Phi-4-mini): the short and long per-frequency factors become
rope_factors_short/long.weight, the original context rope.scaling.original_context_length and the attention
factor rope.scaling.attn_factor, computed as transformers does (sqrt(1 + ln(factor) / ln(original))).
transformers picks the long factors per sequence longer than the original context; llama.cpp picks them for
the whole context when the context it is given exceeds the original one.

llama.cpp runs phi3 without a sliding window (its loader turns Phi SWA off), so a checkpoint whose
sliding_window is shorter than its context attends further than transformers beyond that window: accepted,
as llama.cpp's own converter does, and said in the README.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
from gguf import MODEL_ARCH, MODEL_TENSOR, TENSOR_NAMES, GGMLQuantizationType, GGUFValueType, Keys

from convert.arch import Arch, Config, Meta, OutTensor, Plan
from convert.archs.common import check_rope, common_meta, dense_shapes, head_dim, n_kv_heads, rope_scaling
from convert.errors import UnsupportedError
from convert.plan import default_plan
from convert.source import Checkpoint

T = MODEL_TENSOR
U32, F32 = GGUFValueType.UINT32, GGUFValueType.FLOAT32


def rope_dims(config: Config) -> int:
    factor = float(rope_scaling(config).get("partial_rotary_factor") or config.get("partial_rotary_factor") or 1.0)
    return int(head_dim(config) * factor)


def _longrope(config: Config) -> dict | None:
    params = rope_scaling(config)
    return params if (params.get("rope_type") or params.get("type")) in ("longrope", "su") else None


def original_context(config: Config) -> int | None:
    params = rope_scaling(config)
    orig = params.get("original_max_position_embeddings") or config.get("original_max_position_embeddings")
    return int(orig) if orig and _longrope(config) else None


def attn_factor(config: Config) -> float | None:
    params = _longrope(config)
    if params is None:
        return None
    if params.get("attention_factor") is not None:
        return float(params["attention_factor"])
    orig = original_context(config)
    assert orig is not None  # check() refuses longrope without it
    factor = float(params.get("factor") or int(config["max_position_embeddings"]) / orig)
    return math.sqrt(1 + math.log(factor) / math.log(orig)) if factor > 1.0 else 1.0


def check(config: Config) -> None:
    check_rope(config, also=("longrope", "su"))
    if head_dim(config) * int(config["num_attention_heads"]) != int(config["hidden_size"]):
        raise UnsupportedError(
            "phi3 with head_dim * heads != hidden_size: llama.cpp's phi3 graph assumes they are equal"
        )
    if (params := _longrope(config)) is not None:
        if original_context(config) is None:
            raise UnsupportedError("phi3 longrope without original_max_position_embeddings")
        for key in ("short_factor", "long_factor"):
            if len(params.get(key) or []) != rope_dims(config) // 2:
                raise UnsupportedError(
                    f"phi3 longrope {key} must have {rope_dims(config) // 2} values (rotary dims / 2)"
                )


def plan_phi3(arch: Arch, ckpt: Checkpoint, config: Config, out_type: str) -> Plan:
    plan = default_plan(arch, ckpt, config, out_type)
    params = _longrope(config)
    if params is None:
        return plan
    extra = []
    for kind, key in ((T.ROPE_FACTORS_LONG, "long_factor"), (T.ROPE_FACTORS_SHORT, "short_factor")):
        factors = np.asarray(params[key], dtype=np.float32)

        def produce(f: np.ndarray = factors) -> Iterator[np.ndarray]:
            yield f

        extra.append(
            OutTensor(TENSOR_NAMES[kind] + ".weight", factors.shape, GGMLQuantizationType.F32, factors.nbytes, produce)
        )
    return Plan(plan.arch, plan.config, [*plan.tensors, *extra], plan.meta)


def _meta() -> tuple[Meta, ...]:
    keep = [m for m in common_meta() if m.key != Keys.Rope.DIMENSION_COUNT]
    return (
        *keep,
        Meta(Keys.Rope.DIMENSION_COUNT, rope_dims, U32),
        Meta(Keys.Rope.SCALING_ORIG_CTX_LEN, original_context, U32),
        Meta(Keys.Rope.SCALING_ATTN_FACTOR, attn_factor, F32),
    )


def _qkv(c: Config) -> tuple[int, int]:
    return ((int(c["num_attention_heads"]) + 2 * n_kv_heads(c)) * head_dim(c), int(c["hidden_size"]))


PHI3 = Arch(
    hf_names=("Phi3ForCausalLM",),
    gguf_arch=MODEL_ARCH.PHI3,
    meta=_meta(),
    shapes={
        **dense_shapes(),
        T.ATTN_QKV: _qkv,
        T.FFN_UP: lambda c: (2 * int(c["intermediate_size"]), c["hidden_size"]),
    },
    required=(T.ATTN_NORM, T.ATTN_QKV, T.ATTN_OUT, T.FFN_NORM, T.FFN_UP, T.FFN_DOWN),
    check=check,
    plan=plan_phi3,
)

ARCHS = (PHI3,)
