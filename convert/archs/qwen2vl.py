"""Qwen2.5-VL's text model (Qwen2_5_VLForConditionalGeneration -> GGUF arch `qwen2vl`).

Qwen2's decoder (q/k/v biases, NEOX rope) with M-RoPE: each head's rotary half is cut into sections (config
`mrope_section`, transformers' default [16, 24, 24]) that rotate by the temporal, height and width positions. For
text all three are the token's position, so text alone is plain Qwen2; an image's tokens get their grid row and
column (llama.cpp: 4 positions per embedding, serve/engine/vision.py). Written as `rope.dimension_sections`, padded
to 4 with 0, as llama.cpp's converter does. The tensors are under model.* (hub layout) or model.language_model.*
(transformers 5 in memory); the vision tower (visual.*) goes to the projector GGUF (convert.archs.qwen25vl_vision).

Refused: sections that do not sum to half the head width (llama.cpp would rotate a different split), more than
3 sections, a sliding window (llama.cpp's qwen2vl graph has none).
"""

from __future__ import annotations

from gguf import MODEL_ARCH, MODEL_TENSOR, GGUFValueType, Keys

from convert.arch import Arch, Config, Meta
from convert.archs.common import DENSE_BLOCK, check_rope, common_meta, dense_shapes, head_dim, rope_scaling
from convert.errors import UnsupportedError

DEFAULT_MROPE_SECTION = (16, 24, 24)  # transformers' Qwen2_5_VLRotaryEmbedding default


def mrope_section(config: Config) -> list[int]:
    return [int(x) for x in rope_scaling(config).get("mrope_section") or DEFAULT_MROPE_SECTION]


def sections(config: Config) -> list[int]:
    """`rope.dimension_sections`: the sections padded to 4 with 0."""
    return [*mrope_section(config), 0, 0, 0, 0][:4]


def check(config: Config) -> None:
    check_rope(config, also=("mrope",))
    got = mrope_section(config)
    if len(got) > 3 or sum(got) != head_dim(config) // 2:
        raise UnsupportedError(
            f"qwen2vl mrope_section={got}: llama.cpp needs at most 3 sections summing to half the head width "
            f"({head_dim(config) // 2})"
        )
    if config.get("use_sliding_window"):
        raise UnsupportedError("qwen2vl with use_sliding_window: llama.cpp's qwen2vl graph has no sliding window")


QWEN25_VL = Arch(
    hf_names=("Qwen2_5_VLForConditionalGeneration",),
    gguf_arch=MODEL_ARCH.QWEN2VL,
    meta=(*common_meta(), Meta(Keys.Rope.DIMENSION_SECTIONS, sections, GGUFValueType.ARRAY)),
    shapes=dense_shapes(),
    required=(*DENSE_BLOCK, MODEL_TENSOR.FFN_NORM),
    rename=(("model.language_model.", "model."),),
    skip_prefixes=("visual.", "model.visual."),
    text_config="text_config",
    check=check,
)

ARCHS = (QWEN25_VL,)
