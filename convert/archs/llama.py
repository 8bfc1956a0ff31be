"""Llama and Mistral (GGUF arch `llama`).

HF stores q/k rows in the "rotate half" order; llama.cpp's llama graph applies rope to interleaved pairs,
so each head's rows are permuted (first half / second half -> interleaved), as llama.cpp's converter does.
"""

from __future__ import annotations

import numpy as np
from gguf import MODEL_ARCH, MODEL_TENSOR

from convert.archs import DENSE_BLOCK, Arch, Config, Transform, common_meta, dense_shapes, head_dim


def unrotate(x: np.ndarray, config: Config) -> np.ndarray:
    """Within each head: rows [2, hd/2] -> [hd/2, 2]. Blocks hold whole heads (see `align`)."""
    hd = head_dim(config)
    return x.reshape(-1, 2, hd // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)


ROPE_PERMUTE = Transform(unrotate, align=head_dim)

LLAMA = Arch(
    hf_names=("LlamaForCausalLM", "MistralForCausalLM"),
    gguf_arch=MODEL_ARCH.LLAMA,
    meta=common_meta(),
    transforms={MODEL_TENSOR.ATTN_Q: ROPE_PERMUTE, MODEL_TENSOR.ATTN_K: ROPE_PERMUTE},
    shapes=dense_shapes(),
    required=(*DENSE_BLOCK, MODEL_TENSOR.FFN_NORM),
)

ARCHS = (LLAMA,)
