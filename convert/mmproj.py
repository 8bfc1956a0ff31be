"""The image projector of a multimodal checkpoint -> a second GGUF in llama.cpp's mtmd (clip) format.

`convert_checkpoint` writes it beside the text GGUF as `NAME.mmproj.gguf` (hearth_common.paths.mmproj_path), where `python -m serve`
finds it (and llama.cpp's own tools take it as `--mmproj`). The file is what llama.cpp's mtmd reads: architecture
`clip`, general.type `mmproj`, `clip.vision.*` hyperparameters and preprocessing (image size, patch size, mean,
std), `clip.projector_type`, and tensors `v.*` (the vision tower) and `mm.*` (the projector).

Each family is a `Projector` table (convert.archs.*_vision): which HF classes, which tensor prefixes belong to
the vision side, its metadata as a function of the config and preprocessor_config.json, its weight transforms.
A setting llama.cpp's clip graph for that projector cannot reproduce is refused, naming it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from gguf import MODEL_ARCH, MODEL_TENSOR, GGMLQuantizationType, GGUFType, GGUFValueType, Keys, TensorNameMap

from convert.arch import Config, OutTensor, Transform
from convert.errors import OutputError, ShapeError, SourceError, UnsupportedError
from convert.plan import SAME_BYTES, out_tensor
from convert.source import Checkpoint, read_json
from convert.write import FILE_TYPES, _write_data, _Writer, remove_stale_temps, removed_on_failure, temp_name

Q = GGMLQuantizationType
MetaList = list[tuple[str, Any, GGUFValueType]]


def is_mmproj(path: Path) -> bool:
    return Path(path).name.endswith(".mmproj.gguf")


@dataclass(frozen=True)
class Projector:
    hf_names: tuple[str, ...]
    projector_type: str
    # HF name prefix -> the prefix gguf's TensorNameMap (MMPROJ) knows; names under none of them are the text model's
    prefixes: tuple[tuple[str, str], ...]
    # (vision config, whole config, preprocessor config) -> clip.* keys beyond the common ones; refuses what
    # llama.cpp cannot run (UnsupportedError naming the setting)
    meta: Callable[[Config, Config, Config], MetaList]
    transforms: Mapping[MODEL_TENSOR, Transform] = field(default_factory=dict)
    # HF name fragments of vision tensors llama.cpp does not use (SigLIP's pooling head)
    skip: tuple[str, ...] = ()
    # kept float32 whatever the type (embeddings: llama.cpp's converter keeps them f32)
    f32_tensors: tuple[MODEL_TENSOR, ...] = ()
    # strings mtmd tokenizes around an image, which must be single tokens of the vocabulary
    required_tokens: tuple[str, ...] = ()
    # tensors that are not a vision tensor renamed (Pixtral's [IMG_BREAK] row of the text embedding, Qwen2.5-VL's
    # split q/k/v and patch convolution), given the checkpoint and the projector's out type ("f32" or "f16")
    extra: Callable[[Checkpoint, str], list[OutTensor]] | None = None
    # the vision config class's defaults, for config.json files that leave out keys equal to them (SmolVLM2's)
    vision_defaults: Mapping[str, Any] = field(default_factory=dict)
    # the vision config under the common key names (Qwen2.5-VL's depth / num_heads -> num_hidden_layers / ...)
    vision_view: Callable[[Config], Config] | None = None

    def check_vocab(self, tokens: list[str]) -> None:
        have = set(tokens)
        if missing := [t for t in self.required_tokens if t not in have and byte_level(t) not in have]:
            raise UnsupportedError(
                f"the tokenizer has no {', '.join(map(repr, missing))} as one token; llama.cpp marks "
                f"{self.projector_type} images with them"
            )


def byte_level(text: str) -> str:
    """`text` as a byte-level BPE vocabulary spells it (GPT-2's byte-to-unicode map: "\\n" is "Ċ", " " is "Ġ")."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra = {b: chr(256 + i) for i, b in enumerate(b for b in range(256) if b not in printable)}
    return "".join(chr(b) if b in printable else extra[b] for b in text.encode())


def out_type_for(text_type: str) -> str:
    """The projector's type for a text GGUF of `text_type`: f32 stays f32, anything else f16 (as llama.cpp's mmproj
    files are published: the tower is small beside the text model and quantizing it costs accuracy)."""
    return "f32" if text_type == "f32" else "f16"


def common_meta(vision: Config, full: Config, preproc: Config) -> MetaList:
    """The keys every vision projector writes (llama.cpp's MmprojModel.set_gguf_parameters), after the checks every
    projector shares."""
    V, U32 = Keys.ClipVision, GGUFValueType.UINT32
    text = full.get("text_config") or full
    for key in ("image_mean", "image_std"):
        if not isinstance(preproc.get(key), list) or len(preproc[key]) != 3:
            raise SourceError(f"preprocessor_config.json has no 3-channel {key}; the projector needs it")
    if int(vision.get("num_channels", 3)) != 3:
        raise UnsupportedError(f"vision num_channels={vision['num_channels']}; llama.cpp feeds RGB images only")
    # clip's preprocessing divides every pixel by 255, whatever the projector
    if preproc.get("do_rescale", True) and not math.isclose(preproc.get("rescale_factor", 1 / 255), 1 / 255):
        raise UnsupportedError(f"rescale_factor={preproc['rescale_factor']}; llama.cpp scales pixels by 1/255")
    return [
        (Keys.Clip.HAS_VISION_ENCODER, True, GGUFValueType.BOOL),
        (V.PROJECTION_DIM, int(text["hidden_size"]), U32),
        (V.IMAGE_SIZE, int(vision["image_size"]), U32),
        (V.PATCH_SIZE, int(vision["patch_size"]), U32),
        (V.EMBEDDING_LENGTH, int(vision["hidden_size"]), U32),
        (V.FEED_FORWARD_LENGTH, int(vision["intermediate_size"]), U32),
        (V.BLOCK_COUNT, int(vision["num_hidden_layers"]), U32),
        (V.Attention.HEAD_COUNT, int(vision["num_attention_heads"]), U32),
        (V.IMAGE_MEAN, [float(x) for x in preproc["image_mean"]], GGUFValueType.ARRAY),
        (V.IMAGE_STD, [float(x) for x in preproc["image_std"]], GGUFValueType.ARRAY),
    ]


def preprocessor_config(folder: Path) -> dict[str, Any]:
    """preprocessor_config.json, merged with processor_config.json's image_processor (newer releases)."""
    out = read_json(folder / "preprocessor_config.json", required=False)
    proc = read_json(folder / "processor_config.json", required=False)
    out.update(proc.get("image_processor") or {})
    if not out:
        raise SourceError(f"{folder}: no preprocessor_config.json; the image projector needs its mean, std and size")
    return out


def plan_projector(proj: Projector, ckpt: Checkpoint, out_type: str) -> tuple[list[OutTensor], MetaList]:
    vision = ckpt.config.get("vision_config")
    if not isinstance(vision, dict):
        raise SourceError(f"{ckpt.folder / 'config.json'}: no vision_config")
    vision = {**proj.vision_defaults, **vision}
    if proj.vision_view is not None:
        vision = dict(proj.vision_view(vision))
    preproc = preprocessor_config(ckpt.folder)
    meta = [
        *common_meta(vision, ckpt.config, preproc),
        (Keys.Clip.PROJECTOR_TYPE, proj.projector_type, GGUFValueType.STRING),
        *proj.meta(vision, ckpt.config, preproc),
    ]
    # at least 3 blocks: LLaVA-style projectors number their layers (multi_modal_projector.linear_2 -> mm.2)
    names = TensorNameMap(MODEL_ARCH.MMPROJ, max(3, int(vision["num_hidden_layers"])))
    tensors: list[OutTensor] = []
    unmapped: list[str] = []
    for hf_name, ref in ckpt.tensors.items():
        prefix = next(((old, new) for old, new in proj.prefixes if hf_name.startswith(old)), None)
        if prefix is None or any(s in hf_name for s in proj.skip):
            continue
        norm = prefix[1] + hf_name[len(prefix[0]) :]
        norm = norm.replace("_weight", ".weight") if not norm.endswith((".weight", ".bias")) else norm
        found = names.get_type_and_name(norm, try_suffixes=(".weight", ".bias"))
        if found is None:
            unmapped.append(hf_name)
            continue
        kind, gguf_name = found
        if ref.dtype not in SAME_BYTES:
            raise UnsupportedError(f"tensor {hf_name} has dtype {ref.dtype}; projector weights must be F32/F16/BF16")
        qtype = Q.F32 if (len(ref.shape) < 2 or kind in proj.f32_tensors or out_type == "f32") else Q.F16
        tensors.append(out_tensor(gguf_name, ref, qtype, proj.transforms.get(kind), vision))
    if unmapped:
        raise ShapeError(f"{len(unmapped)} vision tensors have no mmproj name: {', '.join(sorted(unmapped))}")
    if proj.extra is not None:
        tensors.extend(proj.extra(ckpt, out_type))
    if not any(t.name.startswith("v.blk.") for t in tensors):
        raise ShapeError(f"{ckpt.folder}: no vision tower tensors found under {[p for p, _ in proj.prefixes]}")
    tensors.sort(key=lambda t: t.name)
    return tensors, meta


def write_projector(proj: Projector, ckpt: Checkpoint, out: Path, text_type: str, *, name: str) -> Path:
    """Plan and write the projector GGUF atomically (temp file beside the target, renamed at the end)."""
    out_type = out_type_for(text_type)
    tensors, meta = plan_projector(proj, ckpt, out_type)
    remove_stale_temps(out)
    tmp = temp_name(out)
    with removed_on_failure(tmp):
        try:
            _write(tensors, meta, tmp, out_type, name=name)
            os.replace(tmp, out)
        except OSError as e:
            raise OutputError(f"cannot write {out}: {e.strerror or e}") from e
    return out


def _write(tensors: list[OutTensor], meta: MetaList, path: Path, out_type: str, *, name: str) -> None:
    w = _Writer(path, "clip")
    w.add_type(GGUFType.MMPROJ)
    w.add_name(name)
    w.add_file_type(FILE_TYPES[out_type])
    for key, value, vtype in meta:
        floats = vtype == GGUFValueType.ARRAY and all(isinstance(v, float) for v in value)
        w.add_key_value(key, value, vtype, sub_type=GGUFValueType.FLOAT32 if floats else None)
    for t in tensors:
        w.add_tensor_info(t.name, t.shape, np.dtype(np.float32), t.nbytes, raw_dtype=t.ggml_type)
    try:
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        from tqdm import tqdm

        with tqdm(total=sum(t.nbytes for t in tensors), disable=True) as bar:
            for t in tensors:
                _write_data(w, t, bar)
        w.flush()
        assert w.fout is not None
        os.fsync(w.fout[0].fileno())
    finally:
        w.close()


__all__ = ["Projector", "is_mmproj", "plan_projector", "write_projector"]
