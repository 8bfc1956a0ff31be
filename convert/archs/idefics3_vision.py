"""Idefics3 / SmolVLM's image side -> mmproj GGUF, llama.cpp projector type `idefics3`.

A SigLIP tower (patch embedding, learned positions, pre-norm blocks with tanh-GELU, post-layernorm), then the
connector: a pixel shuffle that folds each scale_factor x scale_factor block of patches into one token
(`clip.vision.projector.scale_factor`) and a bias-free matrix (`mm.model.fc`). Names and keys as llama.cpp's
converter writes them (conversion/smolvlm.py), including `clip.vision.preproc_image_size`, the longest edge an
image is resized to before it is cut into tiles of the tower's image_size.

llama.cpp's preprocessing is Idefics3ImageProcessor with image splitting: resize (Lanczos) so the longest edge is
size.longest_edge, round each side up to whole tiles, cut the tiles, and add the whole picture resized to one tile
as an overview; the prompt gets `<fake_token_around_image><row_R_col_C>` before each tile, "\\n" after each row but
the last, and "\\n\\n<fake_token_around_image><global-img>" ... `<fake_token_around_image>` around the overview.
Unlike transformers, it also cuts an image that fits one tile (one tile plus the overview, where transformers
sends the picture alone).

Refused, naming the setting: do_image_splitting=false (llama.cpp always tiles), a resample filter other than
Lanczos, a rescale factor other than 1/255, a tile size (max_image_size.longest_edge) other than the tower's
image_size, a scale factor that does not divide the patch grid, an activation other than tanh-GELU; and, at
conversion, a vocabulary without the tokens mtmd puts around the tiles.
"""

from __future__ import annotations

from gguf import MODEL_TENSOR, GGUFValueType, Keys

from convert.arch import Config
from convert.errors import UnsupportedError
from convert.mmproj import MetaList, Projector

LANCZOS = 1  # PIL's resample code, as preprocessor_config.json spells it
# text mtmd looks up as single tokens of the vocabulary (a missing one would become token -1)
IMAGE_TOKENS = ("<fake_token_around_image>", "<global-img>", "\n", "\n\n")
# Idefics3VisionConfig's and SmolVLMVisionConfig's defaults (SmolVLM2's config.json leaves some of them out)
VISION_DEFAULTS = {
    "hidden_size": 1152,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 16,
    "image_size": 224,
    "patch_size": 32,
}


def meta(vision: Config, full: Config, preproc: Config) -> MetaList:
    act = vision.get("hidden_act", "gelu_pytorch_tanh")
    if act not in ("gelu_pytorch_tanh", "gelu_new"):
        raise UnsupportedError(f"idefics3 vision hidden_act={act}; llama.cpp's SigLIP graph uses tanh-GELU only")
    if not preproc.get("do_image_splitting", True):
        raise UnsupportedError("idefics3 do_image_splitting=false; llama.cpp always cuts an image into tiles")
    if preproc.get("resample", LANCZOS) != LANCZOS:
        raise UnsupportedError(
            f"idefics3 resample={preproc['resample']}; llama.cpp resizes idefics3 images with Lanczos"
        )
    image, patch = int(vision["image_size"]), int(vision["patch_size"])
    tile = (preproc.get("max_image_size") or {}).get("longest_edge", image)
    if tile != image:
        raise UnsupportedError(
            f"max_image_size.longest_edge={tile} differs from the tower's image_size={image}; llama.cpp cuts tiles "
            "of image_size"
        )
    if image % patch:
        raise UnsupportedError(f"image_size={image} is not a multiple of patch_size={patch}")
    scale = int(full.get("scale_factor", 2))
    if scale < 1 or (image // patch) % scale:
        raise UnsupportedError(
            f"scale_factor={scale} does not divide the {image // patch} patches a side; llama.cpp's pixel shuffle "
            "cannot run it"
        )
    longest = int((preproc.get("size") or {}).get("longest_edge", image))
    return [
        (Keys.ClipVision.Attention.LAYERNORM_EPS, float(vision.get("layer_norm_eps", 1e-6)), GGUFValueType.FLOAT32),
        (Keys.ClipVision.USE_GELU, True, GGUFValueType.BOOL),
        (Keys.ClipVision.Projector.SCALE_FACTOR, scale, GGUFValueType.UINT32),
        (Keys.ClipVision.PREPROC_IMAGE_SIZE, longest, GGUFValueType.UINT32),
    ]


IDEFICS3_VISION = Projector(
    hf_names=("Idefics3ForConditionalGeneration", "SmolVLMForConditionalGeneration"),
    projector_type="idefics3",
    prefixes=(
        ("model.vision_model.", "model.vision_model."),
        ("model.connector.", "model.connector."),
    ),
    meta=meta,
    f32_tensors=(MODEL_TENSOR.V_ENC_EMBD_PATCH, MODEL_TENSOR.V_ENC_EMBD_POS),
    required_tokens=IMAGE_TOKENS,
    vision_defaults=VISION_DEFAULTS,
)

PROJECTORS = (IDEFICS3_VISION,)
