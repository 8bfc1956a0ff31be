"""Qwen2 and Qwen3 (GGUF arch `qwen2`, `qwen3`).

Both use NEOX-style rope in llama.cpp, so q/k are copied as they are. Qwen2 has q/k/v biases; Qwen3 has
per-head RMS norms on q and k instead (attn_q_norm / attn_k_norm, shape [head_dim]).
"""

from __future__ import annotations

from gguf import MODEL_ARCH, MODEL_TENSOR

from convert.arch import Arch
from convert.archs.common import DENSE_BLOCK, check_rope, common_meta, dense_shapes, head_dim

QWEN2 = Arch(
    hf_names=("Qwen2ForCausalLM",),
    gguf_arch=MODEL_ARCH.QWEN2,
    meta=common_meta(),
    shapes=dense_shapes(),
    required=(*DENSE_BLOCK, MODEL_TENSOR.FFN_NORM),
    check=check_rope,
)

QWEN3 = Arch(
    hf_names=("Qwen3ForCausalLM",),
    gguf_arch=MODEL_ARCH.QWEN3,
    meta=common_meta(),
    shapes={
        **dense_shapes(),
        MODEL_TENSOR.ATTN_Q_NORM: lambda c: (head_dim(c),),
        MODEL_TENSOR.ATTN_K_NORM: lambda c: (head_dim(c),),
    },
    required=(*DENSE_BLOCK, MODEL_TENSOR.FFN_NORM, MODEL_TENSOR.ATTN_Q_NORM, MODEL_TENSOR.ATTN_K_NORM),
    check=check_rope,
)

ARCHS = (QWEN2, QWEN3)
