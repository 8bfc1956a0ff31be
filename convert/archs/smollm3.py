"""SmolLM3 (SmolLM3ForCausalLM -> GGUF arch `smollm3`): Llama with rope left out of every fourth layer.

llama.cpp's smollm3 graph hard-codes the no-rope layers as every fourth one (layer i skips rope when
(i + 1) % 4 == 0), so a config whose `no_rope_layers` says otherwise, or that turns on its sliding window, is
refused. Rope is applied to interleaved pairs as in llama: q/k rows are permuted as for Llama (the permutation
is the same for q and k, so layers without rope compute the same scores).
"""

from __future__ import annotations

from gguf import MODEL_ARCH, MODEL_TENSOR

from convert.arch import Arch, Config
from convert.archs.common import DENSE_BLOCK, check_rope, common_meta, dense_shapes
from convert.archs.llama import ROPE_PERMUTE
from convert.errors import UnsupportedError

NO_ROPE_EVERY = 4  # llama.cpp's n_no_rope_layer_step for smollm3


def llama_cpp_rope_layers(n_layers: int) -> list[int]:
    return [int((i + 1) % NO_ROPE_EVERY != 0) for i in range(n_layers)]


def check(config: Config) -> None:
    check_rope(config)
    want = llama_cpp_rope_layers(int(config["num_hidden_layers"]))
    if (have := config.get("no_rope_layers")) is not None and list(have) != want:
        raise UnsupportedError(
            f"smollm3 no_rope_layers {list(have)} differ from llama.cpp's fixed pattern (no rope every {NO_ROPE_EVERY}th layer)"
        )
    if config.get("use_sliding_window"):
        raise UnsupportedError("smollm3 with use_sliding_window: llama.cpp's smollm3 graph has no sliding window")


SMOLLM3 = Arch(
    hf_names=("SmolLM3ForCausalLM",),
    gguf_arch=MODEL_ARCH.SMOLLM3,
    meta=common_meta(),
    transforms={MODEL_TENSOR.ATTN_Q: ROPE_PERMUTE, MODEL_TENSOR.ATTN_K: ROPE_PERMUTE},
    shapes=dense_shapes(),
    required=(*DENSE_BLOCK, MODEL_TENSOR.FFN_NORM),
    check=check,
)

ARCHS = (SMOLLM3,)
