"""Mistral 3's image side (Mistral3ForConditionalGeneration: Mistral Small 3.1 / 3.2) -> mmproj GGUF, llama.cpp
projector type `pixtral`.

A Pixtral tower (patch convolution, RMS pre-norm, blocks with 2-D rope and a gated SiLU MLP; no learned positions),
then Mistral 3's projector: RMS norm, a patch merger that folds spatial_merge_size x spatial_merge_size patches
into one (`clip.vision.spatial_merge_size`, `mm.patch_merger`), and two matrices with GELU between them (`mm.1`,
`mm.2`). The tower's q/k rows are permuted per head as for Llama's rope (llama.cpp's 2-D rope takes interleaved
pairs). The image breaks: llama.cpp appends the `[IMG_BREAK]` embedding after each row of image tokens but the last
from the projector file (`v.token_embd.img_break`, that row of the text model's embedding, copied here), and the
`[IMG_END]` token after the image, as transformers' processor lays out the ids.

llama.cpp resizes an image (bicubic) to a multiple of patch_size x merge with between 8 and 1024 tokens, keeping its
aspect ratio; transformers' processor to fit size.longest_edge. A picture already within both and aligned is kept
as it is by both.

Refused, naming the setting: a tower activation other than SiLU (llama.cpp's GELU is the tanh approximation, the
tower's is exact), a projector activation other than GELU, a vision_feature_layer other than the last, a vision
rope theta other than 10000 (llama.cpp's is fixed), a resample filter other than bicubic, a rescale factor other
than 1/255; a vocabulary without `[IMG_BREAK]` and `[IMG_END]`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
from gguf import MODEL_TENSOR, TENSOR_NAMES, GGMLQuantizationType, GGUFValueType, Keys

from convert.arch import Config, OutTensor
from convert.archs.llama import ROPE_PERMUTE
from convert.errors import SourceError, UnsupportedError
from convert.mmproj import MetaList, Projector
from convert.source import Checkpoint, to_f32

T = MODEL_TENSOR
BICUBIC = 3  # PIL's resample code
IMAGE_TOKENS = ("[IMG_BREAK]", "[IMG_END]")
EMBEDDINGS = ("model.language_model.embed_tokens.weight", "language_model.model.embed_tokens.weight")


def _rope_theta(vision: Config) -> float:
    params = vision.get("rope_parameters") or {}
    return float(params.get("rope_theta") or vision.get("rope_theta") or 10000.0)


def meta(vision: Config, full: Config, preproc: Config) -> MetaList:
    if (act := vision.get("hidden_act", "gelu")) != "silu":
        raise UnsupportedError(
            f"pixtral vision hidden_act={act}; llama.cpp runs this tower with SiLU, or GELU by its tanh approximation"
        )
    if (act := full.get("projector_hidden_act", "gelu")) != "gelu":
        raise UnsupportedError(f"mistral3 projector_hidden_act={act}; llama.cpp's pixtral projector uses GELU")
    if (layer := full.get("vision_feature_layer", -1)) != -1:
        raise UnsupportedError(f"mistral3 vision_feature_layer={layer}; llama.cpp takes the tower's last layer")
    if (theta := _rope_theta(vision)) != 10000.0:
        raise UnsupportedError(f"pixtral rope_theta={theta}; llama.cpp's pixtral graph fixes it at 10000")
    if preproc.get("resample", BICUBIC) != BICUBIC:
        raise UnsupportedError(f"pixtral resample={preproc['resample']}; llama.cpp resizes pixtral images bicubically")
    return [
        (Keys.ClipVision.Attention.LAYERNORM_EPS, 1e-5, GGUFValueType.FLOAT32),  # PixtralRMSNorm's, fixed in HF
        (Keys.ClipVision.USE_SILU, True, GGUFValueType.BOOL),
        (Keys.ClipVision.SPATIAL_MERGE_SIZE, int(full.get("spatial_merge_size", 1)), GGUFValueType.UINT32),
    ]


def _token_id(ckpt: Checkpoint, token: str) -> int:
    """An added token's id, from tokenizer.json (or tokenizer_config.json's added_tokens_decoder)."""
    for name, key in (("tokenizer.json", "added_tokens"), ("tokenizer_config.json", "added_tokens_decoder")):
        path = ckpt.folder / name
        if not path.is_file():
            continue
        entries = json.loads(path.read_text(encoding="utf-8")).get(key) or []
        items = entries.items() if isinstance(entries, dict) else ((e.get("id"), e) for e in entries)
        for id_, entry in items:
            if isinstance(entry, dict) and entry.get("content") == token:
                return int(id_)
    raise UnsupportedError(f"the tokenizer has no {token}; llama.cpp puts its embedding after each row of an image")


def image_break(ckpt: Checkpoint, out_type: str) -> list[OutTensor]:
    """`v.token_embd.img_break`: the [IMG_BREAK] row of the text model's embedding, float32 whatever `out_type`."""
    ref = next((ckpt.tensors[n] for n in EMBEDDINGS if n in ckpt.tensors), None)
    if ref is None:
        raise SourceError(f"{ckpt.folder}: no text embedding ({' or '.join(EMBEDDINGS)}) to take [IMG_BREAK] from")
    row = _token_id(ckpt, "[IMG_BREAK]")
    if row >= ref.rows:
        raise SourceError(f"[IMG_BREAK] is token {row}, past the embedding's {ref.rows} rows")
    width = int(np.prod(ref.shape[1:]))

    def produce() -> Iterator[np.ndarray]:
        yield to_f32(ref.read(row, row + 1), ref.dtype).reshape(width)

    name = TENSOR_NAMES[T.V_TOK_EMBD_IMG_BREAK]
    return [OutTensor(name, (width,), GGMLQuantizationType.F32, width * 4, produce)]


MISTRAL3_VISION = Projector(
    hf_names=("Mistral3ForConditionalGeneration",),
    projector_type="pixtral",
    prefixes=(
        ("model.vision_tower.", "vision_tower."),
        ("vision_tower.", "vision_tower."),
        ("model.multi_modal_projector.", "multi_modal_projector."),
        ("multi_modal_projector.", "multi_modal_projector."),
    ),
    meta=meta,
    transforms={T.V_ENC_ATTN_Q: ROPE_PERMUTE, T.V_ENC_ATTN_K: ROPE_PERMUTE},
    f32_tensors=(T.V_ENC_EMBD_PATCH,),
    required_tokens=IMAGE_TOKENS,
    extra=image_break,
)

PROJECTORS = (MISTRAL3_VISION,)
