"""MXFP4 (OCP microscaling FP4) in the layout of HuggingFace gpt-oss checkpoints, and its ggml form.

HF layout (what `openai/gpt-oss-*` ship, what transformers dequantizes):
  a weight W of shape [..., rows, K] (for the experts: [E, out_features, in_features], i.e. the
  transpose of transformers' `GptOssExperts.gate_up_proj` / `down_proj` parameters, which are [E, in, out])
  is cut along K into blocks of 32 values.
  - `*_blocks`: uint8 [..., rows, K // 32, 16]; byte i of a block holds element 2i in its low nibble
    and element 2i + 1 in its high nibble.
  - `*_scales`: uint8 [..., rows, K // 32]; an e8m0 exponent with bias 127 (value = 2 ** (s - 127)).
  - a nibble is an e2m1 code: bit 3 the sign, codes 0..7 = 0, .5, 1, 1.5, 2, 3, 4, 6.

ggml layout (GGMLQuantizationType.MXFP4, 17 bytes a block): the scale byte first, then 16 bytes whose
low nibbles hold elements 0..15 and high nibbles elements 16..31. ggml stores its values doubled with
a halved scale, which is the same number, so only the nibble order changes between the two.

Rounding of `pack_mxfp4` (the same rule as the OCP spec and gguf-py's MXFP4 quantizer):
  the block's exponent is floor(log2(max |w|)) - 2, so the block maximum lands in [4, 8) and anything
  above 6 clips to 6; each value then goes to the nearest e2m1 value, ties toward the smaller magnitude.
  An all-zero block gets scale byte 0. `unpack_mxfp4(*pack_mxfp4(w))` is therefore the fake-quantized w.

numpy only: the converter reads these without torch.
"""

from __future__ import annotations

import numpy as np

BLOCK = 32
FP4_VALUES = np.array(
    [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0],
    dtype=np.float32,
)
_MAGNITUDES = FP4_VALUES[:8]
_MIDPOINTS = (_MAGNITUDES[1:] + _MAGNITUDES[:-1]) / 2
_SCALE_BIAS = 127


def pack_mxfp4(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quantize float weights [..., K] (K a multiple of 32) to HF (`blocks` [..., K//32, 16], `scales` [..., K//32])."""
    w = np.ascontiguousarray(w, dtype=np.float32)
    if w.ndim < 1 or w.shape[-1] % BLOCK:
        raise ValueError(f"MXFP4 needs a last dimension that is a multiple of {BLOCK}, got shape {w.shape}")
    if not np.isfinite(w).all():
        raise ValueError("MXFP4 cannot pack NaN or infinite weights")
    groups = w.reshape(*w.shape[:-1], w.shape[-1] // BLOCK, BLOCK)
    amax = np.abs(groups).max(axis=-1)
    with np.errstate(divide="ignore"):
        exp = np.where(amax > 0, np.floor(np.log2(amax)) - 2, -_SCALE_BIAS)
    scales = np.clip(exp + _SCALE_BIAS, 0, 254).astype(np.uint8)
    # exact power of two, as float64 so tiny exponents do not underflow before the division
    scaled = np.abs(groups) / np.ldexp(1.0, scales.astype(np.int32) - _SCALE_BIAS)[..., None]
    # side="left": a value exactly on a midpoint goes to the smaller magnitude (gguf-py's argmin does the same)
    codes = np.searchsorted(_MIDPOINTS, scaled, side="left").astype(np.uint8)
    codes |= np.signbit(groups).astype(np.uint8) << 3
    codes[(codes & 7) == 0] = 0  # no negative zero: keeps the bytes equal to gguf-py's quantizer
    blocks = codes[..., 0::2] | (codes[..., 1::2] << 4)
    return np.ascontiguousarray(blocks, dtype=np.uint8), np.ascontiguousarray(scales)


def unpack_mxfp4(blocks: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Dequantize HF MXFP4 (`blocks` [..., G, 16], `scales` [..., G]) to float32 [..., G * 32]."""
    blocks = np.asarray(blocks, dtype=np.uint8)
    scales = np.asarray(scales, dtype=np.uint8)
    if blocks.shape[-1:] != (BLOCK // 2,) or blocks.shape[:-1] != scales.shape:
        raise ValueError(f"MXFP4 blocks {blocks.shape} and scales {scales.shape} do not fit together")
    codes = np.empty((*blocks.shape[:-1], BLOCK), dtype=np.uint8)
    codes[..., 0::2] = blocks & 0x0F
    codes[..., 1::2] = blocks >> 4
    values = np.ldexp(FP4_VALUES[codes], scales.astype(np.int32)[..., None] - _SCALE_BIAS)
    return values.reshape(*blocks.shape[:-2], blocks.shape[-2] * BLOCK).astype(np.float32)


def hf_to_ggml_blocks(blocks: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Reorder HF MXFP4 into ggml's block_mxfp4 bytes: uint8 [..., G, 17] (scale, then 16 packed bytes)."""
    blocks = np.asarray(blocks, dtype=np.uint8)
    scales = np.asarray(scales, dtype=np.uint8)
    if blocks.shape[-1:] != (BLOCK // 2,) or blocks.shape[:-1] != scales.shape:
        raise ValueError(f"MXFP4 blocks {blocks.shape} and scales {scales.shape} do not fit together")
    lo, hi = blocks & 0x0F, blocks >> 4  # elements 0,2,4,.. and 1,3,5,..
    elements = np.stack([lo, hi], axis=-1).reshape(*blocks.shape[:-1], BLOCK)
    qs = elements[..., : BLOCK // 2] | (elements[..., BLOCK // 2 :] << 4)
    return np.concatenate([scales[..., None], qs], axis=-1)
