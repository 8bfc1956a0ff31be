"""Gemma 3 (GGUF arch `gemma3`): the text model alone, or the text part of Gemma3ForConditionalGeneration.

- Gemma3RMSNorm scales by (1 + weight); llama.cpp's norm scales by weight, so every norm gets +1 here.
- The embedding is scaled by sqrt(hidden) in both HF and llama.cpp's graph: nothing to do.
- Sliding-window layers: the window, the per-layer pattern (from layer_types) and the local rope base are
  written explicitly; llama.cpp would otherwise assume a 5:1 pattern and the global base.
- llama.cpp scales queries by 1/sqrt(head_dim) (1/sqrt(hidden/heads) for the 27B), so a different
  query_pre_attn_scalar would run differently: refused.
"""

from __future__ import annotations

import numpy as np
from gguf import MODEL_ARCH, MODEL_TENSOR, GGUFValueType, Keys

from convert.arch import Arch, Config, Meta, Transform
from convert.archs.common import check_rope, common_meta, dense_shapes, head_dim, multimodal, rope_theta
from convert.errors import UnsupportedError

T = MODEL_TENSOR


def plus_one(x: np.ndarray, config: Config) -> np.ndarray:
    return x + 1.0


def sliding_pattern(config: Config) -> list[bool] | None:
    """Per layer: True where the layer uses the sliding window."""
    if not config.get("sliding_window"):
        return None
    n = int(config["num_hidden_layers"])
    if types := config.get("layer_types"):
        return [t == "sliding_attention" for t in types]
    every = int(config.get("sliding_window_pattern") or config.get("_sliding_window_pattern") or 6)
    return [(i + 1) % every != 0 for i in range(n)]


def check(config: Config) -> None:
    scalar = config.get("query_pre_attn_scalar")
    hd = head_dim(config)
    if scalar is not None and int(scalar) not in (hd, int(config["hidden_size"]) // int(config["num_attention_heads"])):
        raise UnsupportedError(
            f"gemma3 query_pre_attn_scalar={scalar} differs from head_dim={hd}; llama.cpp cannot run it"
        )
    check_rope(config)
    if config.get("attn_logit_softcapping"):
        raise UnsupportedError("gemma3 with attn_logit_softcapping is not supported by llama.cpp's gemma3 graph")


NORMS = (T.ATTN_NORM, T.ATTN_POST_NORM, T.FFN_PRE_NORM, T.FFN_POST_NORM, T.OUTPUT_NORM, T.ATTN_Q_NORM, T.ATTN_K_NORM)
PLUS_ONE = Transform(plus_one)

META = (
    *common_meta(),
    Meta(
        Keys.Attention.SLIDING_WINDOW,
        lambda c: c.get("sliding_window") if sliding_pattern(c) else None,
        GGUFValueType.UINT32,
    ),
    Meta(Keys.Attention.SLIDING_WINDOW_PATTERN, sliding_pattern, GGUFValueType.ARRAY),
    Meta(Keys.Rope.FREQ_BASE_SWA, lambda c: rope_theta(c, "sliding_attention") or 10000.0, GGUFValueType.FLOAT32),
    Meta(Keys.LLM.FINAL_LOGIT_SOFTCAPPING, "final_logit_softcapping", GGUFValueType.FLOAT32),
)

SHAPES = {
    **dense_shapes(),
    **{t: (lambda c: (c["hidden_size"],)) for t in (T.ATTN_POST_NORM, T.FFN_PRE_NORM, T.FFN_POST_NORM)},
    T.ATTN_Q_NORM: lambda c: (head_dim(c),),
    T.ATTN_K_NORM: lambda c: (head_dim(c),),
}
REQUIRED = (
    T.ATTN_NORM, T.ATTN_Q, T.ATTN_K, T.ATTN_V, T.ATTN_OUT, T.ATTN_Q_NORM, T.ATTN_K_NORM, T.ATTN_POST_NORM,
    T.FFN_NORM, T.FFN_POST_NORM, T.FFN_GATE, T.FFN_UP, T.FFN_DOWN,
)  # fmt: skip

GEMMA3 = Arch(
    hf_names=("Gemma3ForCausalLM",),
    gguf_arch=MODEL_ARCH.GEMMA3,
    meta=META,
    transforms=dict.fromkeys(NORMS, PLUS_ONE),
    shapes=SHAPES,
    required=REQUIRED,
    check=check,
)

GEMMA3_MM = multimodal(GEMMA3, "Gemma3ForConditionalGeneration")

ARCHS = (GEMMA3, GEMMA3_MM)
