"""Gemma 3's image side (Gemma3ForConditionalGeneration) -> mmproj GGUF, llama.cpp projector type `gemma3`.

SigLIP (patch embedding, learned positions, pre-norm blocks with tanh-GELU, post-layernorm), then Gemma 3's
projector: an average pool that turns each side's patches into sqrt(mm_tokens_per_image) tokens, Gemma3RMSNorm
(`mm.soft_emb_norm`, scales by 1 + weight: +1 here) and a matrix (`mm.input_projection`, kept as HF stores it).
llama.cpp's graph pools by `clip.vision.projector.scale_factor` (default 4, Gemma 3's own ratio: 64 patches a side
to 16 tokens), written when it differs; it resizes an image to image_size x image_size bilinearly and normalizes
with the file's mean and std, which is Gemma3ImageProcessor without pan-and-scan.

Refused, naming the setting: pan-and-scan (llama.cpp does not crop), a resample filter other than bilinear, a
rescale factor other than 1/255, a processor size other than the tower's image_size, a non-square token grid
or one that does not divide the patch grid, an activation other than tanh-GELU.
"""

from __future__ import annotations

import math

import numpy as np
from gguf import MODEL_TENSOR, GGUFValueType, Keys

from convert.arch import Config, Transform
from convert.errors import UnsupportedError
from convert.mmproj import MetaList, Projector

T = MODEL_TENSOR
BILINEAR = 2  # PIL's resample code, as preprocessor_config.json spells it
# the strings mtmd puts around a Gemma 3 image; the vocabulary must hold them as single tokens
IMAGE_TOKENS = ("<start_of_image>", "<end_of_image>")


def plus_one(x: np.ndarray, config: Config) -> np.ndarray:
    return x + 1.0


def meta(vision: Config, full: Config, preproc: Config) -> MetaList:
    act = vision.get("hidden_act", "gelu_pytorch_tanh")
    if act not in ("gelu_pytorch_tanh", "gelu_new"):
        raise UnsupportedError(f"gemma3 vision hidden_act={act}; llama.cpp's SigLIP graph uses tanh-GELU only")
    if preproc.get("do_pan_and_scan"):
        raise UnsupportedError("gemma3 do_pan_and_scan=true; llama.cpp resizes the whole image and does not crop")
    if preproc.get("resample", BILINEAR) != BILINEAR:
        raise UnsupportedError(f"gemma3 resample={preproc['resample']}; llama.cpp resizes gemma3 images bilinearly")
    image, patch = int(vision["image_size"]), int(vision["patch_size"])
    size = preproc.get("size") or {}
    if size and (size.get("height", image), size.get("width", image)) != (image, image):
        raise UnsupportedError(f"processor size={size} differs from the tower's image_size={image}")
    if image % patch:
        raise UnsupportedError(f"image_size={image} is not a multiple of patch_size={patch}")
    tokens = int(full.get("mm_tokens_per_image") or preproc.get("image_seq_length") or 256)
    side = math.isqrt(tokens)
    if side * side != tokens or (image // patch) % side:
        raise UnsupportedError(
            f"mm_tokens_per_image={tokens} is not a square grid that divides {image // patch} patches a side; "
            "llama.cpp's gemma3 pooling cannot produce it"
        )
    out: MetaList = [
        (Keys.ClipVision.Attention.LAYERNORM_EPS, float(vision.get("layer_norm_eps", 1e-6)), GGUFValueType.FLOAT32),
        (Keys.ClipVision.USE_GELU, True, GGUFValueType.BOOL),
    ]
    if (scale := (image // patch) // side) != 4:
        out.append((Keys.ClipVision.Projector.SCALE_FACTOR, scale, GGUFValueType.UINT32))
    return out


GEMMA3_VISION = Projector(
    hf_names=("Gemma3ForConditionalGeneration",),
    projector_type="gemma3",
    prefixes=(
        ("model.vision_tower.vision_model.", "vision_tower.vision_model."),
        ("model.vision_tower.", "vision_tower.vision_model."),  # transformers 5 saves SigLIP without vision_model.
        ("vision_tower.vision_model.", "vision_tower.vision_model."),
        ("vision_tower.", "vision_tower.vision_model."),
        ("model.multi_modal_projector.", "multi_modal_projector."),
        ("multi_modal_projector.", "multi_modal_projector."),
    ),
    meta=meta,
    transforms={T.V_MM_SOFT_EMB_NORM: Transform(plus_one)},
    skip=("vision_model.head.",),
    f32_tensors=(T.V_ENC_EMBD_PATCH, T.V_ENC_EMBD_POS),
    required_tokens=IMAGE_TOKENS,
)

PROJECTORS = (GEMMA3_VISION,)
