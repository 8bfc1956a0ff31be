"""Mistral 3's text model (Mistral3ForConditionalGeneration, Ministral3ForCausalLM -> GGUF arch `mistral3`).

Mistral3ForConditionalGeneration is a Pixtral vision tower plus a Mistral (Mistral Small 3.x) or Ministral 3
text model; as for Gemma 3's multimodal release, the text model is converted from under its prefix
(transformers 5: model.language_model.*, older: language_model.model.*) with config.json's text_config; the
vision tower and projector go to the projector GGUF (convert.archs.mistral3_vision). q/k rows are permuted as for Llama (interleaved rope).

Ministral 3 uses YaRN plus Llama 4's attention temperature (queries scaled by
1 + beta * log(1 + floor(pos / original_max_position_embeddings))): written as the yarn keys, the yarn log
multiplier (mscale_all_dim) and attention.temperature_scale, which llama.cpp's mistral3 graph reads. llama.cpp
assumes a yarn mscale of 1 and has no sliding window for this arch; configs needing either are refused.
"""

from __future__ import annotations

from gguf import MODEL_ARCH, MODEL_TENSOR, GGUFValueType, Keys

from convert.arch import Arch, Config, Meta
from convert.archs.common import DENSE_BLOCK, check_rope, common_meta, dense_shapes, multimodal, rope_scaling
from convert.archs.llama import ROPE_PERMUTE
from convert.errors import UnsupportedError

F32 = GGUFValueType.FLOAT32


def _yarn(config: Config, key: str) -> float | None:
    params = rope_scaling(config)
    if (params.get("rope_type") or params.get("type")) != "yarn" or params.get(key) is None:
        return None
    return float(params[key])


def check(config: Config) -> None:
    check_rope(config)
    if config.get("sliding_window"):
        raise UnsupportedError("mistral3 with a sliding_window: llama.cpp's mistral3 graph has no sliding window")
    mscale = _yarn(config, "mscale")
    if mscale is not None and mscale != 1.0:
        raise UnsupportedError(f"mistral3 yarn mscale={mscale}: llama.cpp assumes 1")


META = (
    *common_meta(),
    Meta(Keys.Rope.SCALING_YARN_BETA_FAST, lambda c: _yarn(c, "beta_fast"), F32),
    Meta(Keys.Rope.SCALING_YARN_BETA_SLOW, lambda c: _yarn(c, "beta_slow"), F32),
    Meta(Keys.Rope.SCALING_YARN_LOG_MUL, lambda c: _yarn(c, "mscale_all_dim"), F32),
    Meta(Keys.Attention.TEMPERATURE_SCALE, lambda c: _yarn(c, "llama_4_scaling_beta"), F32),
)

MINISTRAL3 = Arch(
    hf_names=("Ministral3ForCausalLM",),
    gguf_arch=MODEL_ARCH.MISTRAL3,
    meta=META,
    transforms={MODEL_TENSOR.ATTN_Q: ROPE_PERMUTE, MODEL_TENSOR.ATTN_K: ROPE_PERMUTE},
    shapes=dense_shapes(),
    required=(*DENSE_BLOCK, MODEL_TENSOR.FFN_NORM),
    check=check,
)

MISTRAL3 = multimodal(MINISTRAL3, "Mistral3ForConditionalGeneration")  # Mistral Small 3.x

ARCHS = (MINISTRAL3, MISTRAL3)
