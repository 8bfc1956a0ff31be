"""Qwen2.5-VL's image side (Qwen2_5_VLForConditionalGeneration) -> mmproj GGUF, llama.cpp projector type
`qwen2.5vl_merger`.

The tower: a patch convolution over 2 frames (Conv3d, kernel 2 x 14 x 14) that llama.cpp runs as two 2-D
convolutions summed (`v.patch_embd.weight` and `v.patch_embd.weight.1`, the two temporal slices: a still image is
both frames, as transformers repeats it); blocks with RMS norms, a fused qkv projection (split into q, k, v here, as
llama.cpp's converter does), 2-D rope and a gated SiLU MLP with biases; window attention in every block but the
full-attention ones (`fullatt_block_indexes`, written as `clip.vision.n_wa_pattern`: llama.cpp makes block i full
when (i + 1) % n == 0). The patch merger: RMS norm (`v.post_ln`), 2x2 patches concatenated, two matrices with GELU
between them (`mm.0`, `mm.2`).

llama.cpp keeps an image whose sides are multiples of 28 pixels and whose token count lies in 8..4096 as it is,
otherwise resizes it (bicubic, aspect kept); transformers' processor does the same with its min/max_pixels (a real
checkpoint's 4..16384 tokens), so pictures between both limits are seen alike.

Refused, naming the setting: a tower activation other than SiLU, a spatial_merge_size or temporal_patch_size other
than 2 (llama.cpp's graph fixes both), a window_size other than 112 (llama.cpp reads none and uses 112),
full-attention blocks llama.cpp's every-n-th pattern does not give, a vision rope theta other than 10000, an MLP
as wide as the tower (llama.cpp would take it for a legacy file with up and down swapped), a resample filter
other than bicubic, a rescale factor other than 1/255; a vocabulary without `<|vision_start|>` and
`<|vision_end|>`. Not refused, as for Mistral 3: the merger's GELU is exact in transformers and the tanh
approximation in llama.cpp (a small difference the tests measure).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import numpy as np
from gguf import MODEL_TENSOR, TENSOR_NAMES, GGMLQuantizationType, GGUFValueType, Keys

from convert.arch import Config, OutTensor
from convert.errors import ShapeError, SourceError, UnsupportedError
from convert.mmproj import MetaList, Projector
from convert.plan import encode, nbytes_of
from convert.source import Checkpoint, TensorRef, to_f32

T = MODEL_TENSOR
Q = GGMLQuantizationType
BICUBIC = 3  # PIL's resample code
WINDOW = 112  # llama.cpp's attention window for qwen2.5vl, in pixels
QKV = re.compile(r"^(?:model\.)?visual\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)$")
PATCH = ("visual.patch_embed.proj.weight", "model.visual.patch_embed.proj.weight")


def vision_view(vision: Config) -> Config:
    """Qwen2.5-VL's vision keys under the names the common projector keys read."""
    out = dict(vision)
    out["num_hidden_layers"] = vision["depth"]
    out["num_attention_heads"] = vision["num_heads"]
    out["num_channels"] = vision.get("in_channels", 3)
    out.setdefault("image_size", 560)  # llama.cpp's converter's value: a warmup size only
    return out


def n_wa_pattern(vision: Config) -> int:
    full = [int(i) for i in vision.get("fullatt_block_indexes") or []]
    depth = int(vision["depth"])
    n = full[0] + 1 if full else 0
    if not full or full != list(range(n - 1, depth, n)):
        raise UnsupportedError(
            f"qwen2.5-vl fullatt_block_indexes={full} with depth {depth}: llama.cpp makes every n-th block "
            "full-attention (n-1, 2n-1, ... up to the last block) and no other pattern"
        )
    return n


def _rope_theta(vision: Config) -> float:
    params = vision.get("rope_parameters") or {}
    return float(params.get("rope_theta") or vision.get("rope_theta") or 10000.0)


def meta(vision: Config, full: Config, preproc: Config) -> MetaList:
    if (act := vision.get("hidden_act", "silu")) != "silu":
        raise UnsupportedError(f"qwen2.5-vl vision hidden_act={act}; llama.cpp runs this tower with SiLU")
    for key in ("spatial_merge_size", "temporal_patch_size"):
        if (value := int(vision.get(key, 2))) != 2:
            raise UnsupportedError(f"qwen2.5-vl {key}={value}; llama.cpp's qwen2.5vl graph fixes it at 2")
    if (window := int(vision.get("window_size", WINDOW))) != WINDOW:
        raise UnsupportedError(f"qwen2.5-vl window_size={window}; llama.cpp's qwen2.5vl windows are {WINDOW} pixels")
    if (theta := _rope_theta(vision)) != 10000.0:
        raise UnsupportedError(f"qwen2.5-vl vision rope_theta={theta}; llama.cpp's graph fixes it at 10000")
    if int(vision["intermediate_size"]) == int(vision["hidden_size"]):
        raise UnsupportedError(
            "qwen2.5-vl vision intermediate_size equal to hidden_size: llama.cpp takes such a file for a legacy one "
            "and swaps the MLP's up and down matrices"
        )
    text = full.get("text_config") or full
    if int(vision.get("out_hidden_size", text["hidden_size"])) != int(text["hidden_size"]):
        raise ShapeError(f"vision out_hidden_size={vision['out_hidden_size']} is not the text hidden_size")
    if preproc.get("resample", BICUBIC) != BICUBIC:
        raise UnsupportedError(f"qwen2.5-vl resample={preproc['resample']}; llama.cpp resizes its images bicubically")
    return [
        (Keys.ClipVision.Attention.LAYERNORM_EPS, 1e-6, GGUFValueType.FLOAT32),  # the tower's RMSNorm, fixed in HF
        (Keys.ClipVision.USE_SILU, True, GGUFValueType.BOOL),
        (Keys.ClipVision.N_WA_PATTERN, n_wa_pattern(vision), GGUFValueType.UINT32),
    ]


def _sliced(name: str, shape: tuple[int, ...], qtype: Q, read: Callable[[], np.ndarray]) -> OutTensor:
    def produce() -> Iterator[np.ndarray]:
        yield encode(read(), qtype)

    return OutTensor(name, shape, qtype, nbytes_of(shape, qtype), produce)


def split_tensors(ckpt: Checkpoint, out_type: str) -> list[OutTensor]:
    """The fused qkv of each block as q, k and v (llama.cpp's converter splits them), and the patch kernel."""
    out: list[OutTensor] = []
    for hf_name, ref in ckpt.tensors.items():
        if m := QKV.match(hf_name):
            if ref.rows % 3:
                raise ShapeError(f"{hf_name} has {ref.rows} rows, not a multiple of 3 (q, k, v)")
            c = ref.rows // 3
            qtype = Q.F32 if len(ref.shape) < 2 or out_type == "f32" else Q.F16
            for i, part in enumerate(("q", "k", "v")):
                name = f"{TENSOR_NAMES[getattr(T, f'V_ENC_ATTN_{part.upper()}')].format(bid=m[1])}.{m[2]}"

                def read(ref: TensorRef = ref, lo: int = i * c, hi: int = (i + 1) * c) -> np.ndarray:
                    return to_f32(ref.read(lo, hi), ref.dtype)

                out.append(_sliced(name, (c, *ref.shape[1:]), qtype, read))
    return out + patch_frames(ckpt, out_type)


def patch_frames(ckpt: Checkpoint, out_type: str) -> list[OutTensor]:
    """The Conv3d patch kernel [hidden, 3, 2, p, p] as its two temporal slices, two Conv2d kernels."""
    conv = next((ckpt.tensors[n] for n in PATCH if n in ckpt.tensors), None)
    if conv is None:
        raise SourceError(f"{ckpt.folder}: no {PATCH[0]} (the patch convolution)")
    if len(conv.shape) != 5 or conv.shape[2] != 2:
        raise ShapeError(f"{conv.name} has shape {conv.shape}; expected [hidden, channels, 2, patch, patch]")
    shape = (conv.shape[0], conv.shape[1], conv.shape[3], conv.shape[4])
    qtype = Q.F32 if out_type == "f32" else Q.F16
    base = TENSOR_NAMES[T.V_ENC_EMBD_PATCH]
    out = []
    for t, suffix in ((0, ".weight"), (1, ".weight.1")):

        def read_frame(ref: TensorRef = conv, t: int = t) -> np.ndarray:
            return np.ascontiguousarray(to_f32(ref.read(), ref.dtype)[:, :, t])

        out.append(_sliced(base + suffix, shape, qtype, read_frame))
    return out


QWEN25_VL_VISION = Projector(
    hf_names=("Qwen2_5_VLForConditionalGeneration",),
    projector_type="qwen2.5vl_merger",
    prefixes=(("model.visual.", "visual."), ("visual.", "visual.")),
    meta=meta,
    skip=(".attn.qkv.", "patch_embed.proj."),
    required_tokens=("<|vision_start|>", "<|vision_end|>"),
    extra=split_tensors,
    vision_view=vision_view,
)

PROJECTORS = (QWEN25_VL_VISION,)
