"""Granite (GraniteForCausalLM -> GGUF arch `granite`): Llama with four multipliers.

transformers scales the embeddings by `embedding_multiplier`, each residual branch by `residual_multiplier`,
attention scores by `attention_multiplier` (instead of 1/sqrt(head_dim)) and divides the logits by
`logits_scaling`; llama.cpp's granite graph reads the same four as embedding_scale, residual_scale,
attention.scale and logit_scale (the last one it requires). q/k rows are permuted as for Llama (interleaved
rope); attention and MLP biases, where a config has them, map one-to-one.
"""

from __future__ import annotations

from gguf import MODEL_ARCH, MODEL_TENSOR, GGUFValueType, Keys

from convert.arch import Arch, Meta
from convert.archs.common import DENSE_BLOCK, check_rope, common_meta, dense_shapes
from convert.archs.llama import ROPE_PERMUTE

F32 = GGUFValueType.FLOAT32

GRANITE = Arch(
    hf_names=("GraniteForCausalLM",),
    gguf_arch=MODEL_ARCH.GRANITE,
    meta=(
        *common_meta(),
        Meta(Keys.LLM.EMBEDDING_SCALE, "embedding_multiplier", F32),
        Meta(Keys.LLM.RESIDUAL_SCALE, "residual_multiplier", F32),
        Meta(Keys.Attention.SCALE, "attention_multiplier", F32),
        Meta(Keys.LLM.LOGIT_SCALE, "logits_scaling", F32, default=1.0),
    ),
    transforms={MODEL_TENSOR.ATTN_Q: ROPE_PERMUTE, MODEL_TENSOR.ATTN_K: ROPE_PERMUTE},
    shapes=dense_shapes(),
    required=(*DENSE_BLOCK, MODEL_TENSOR.FFN_NORM),
    check=check_rope,
)

ARCHS = (GRANITE,)
