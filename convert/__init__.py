"""HuggingFace safetensors folder -> one GGUF file that llama.cpp runs as transformers does.

from convert import convert_checkpoint
gguf_path = convert_checkpoint(Path("models/demo/demo-think"), out_type="q8_0")
"""

from __future__ import annotations

import os
from pathlib import Path

from gguf import Keys

from convert.archs import lookup, projector
from convert.errors import ConvertError, OutputError, UnsupportedError
from convert.llama_quirks import general_name
from convert.mmproj import write_projector
from convert.plan import default_plan
from convert.pooling import pooling_meta
from convert.source import open_checkpoint
from convert.vocab_kind import load_vocab
from convert.write import (
    LLAMA_QUANT_FTYPES,
    OUT_TYPES,
    llama_quantize,
    remove_stale_temps,
    removed_on_failure,
    temp_name,
    write_gguf,
)
from hearth_common.paths import mmproj_path

__all__ = ["OUT_TYPES", "ConvertError", "convert_checkpoint", "default_output"]

# the checkpoint's own precision -> --type
NATIVE_TYPES = {"F32": "f32", "F16": "f16", "BF16": "bf16"}


def default_output(src: Path, out_type: str) -> Path:
    """models/foo -> models/foo.q8_0.gguf (beside the folder, never inside it)."""
    src = Path(src).resolve()
    return src.with_name(f"{src.name}.{out_type}.gguf")


def convert_checkpoint(
    src: Path,
    out: Path | None = None,
    out_type: str | None = None,
    *,
    force: bool = False,
    progress: bool = True,
    pooling: str | None = None,
    text_only: bool = False,
) -> Path:
    """Convert one HF folder; returns the GGUF's path. Raises ConvertError (one line) on bad input.

    `pooling` (mean, cls, last) marks an embedding model; by default a sentence-transformers folder's own.
    `pooling` rank marks a reranker: a cross-encoder is one anyway, a Qwen3 checkpoint becomes one (by default
    when its files say it is a Qwen3-Reranker: convert.archs.qwen3_rerank).
    A multimodal checkpoint whose image side llama.cpp runs (Gemma 3, Idefics3 / SmolVLM, Mistral 3) also gets its
    projector written beside the GGUF as NAME.mmproj.gguf (convert.mmproj), first, so a text GGUF present means its
    projector is too; `text_only` leaves it out."""
    src = Path(src)
    if out_type is not None and out_type not in OUT_TYPES:
        raise UnsupportedError(f"unknown output type {out_type!r}; choose from {', '.join(OUT_TYPES)}")
    ckpt = open_checkpoint(src)
    arch = lookup(ckpt.architecture)
    config = arch.config(ckpt.config)
    if arch.check is not None:
        arch.check(config)
    out_type = out_type or NATIVE_TYPES[ckpt.weight_dtype()]
    out = Path(out) if out is not None else default_output(src, out_type)
    if out.is_dir():
        raise OutputError(f"{out} is a folder; give a .gguf file path")
    if out.exists() and not force:
        raise OutputError(f"{out} exists; pass --force to overwrite it")
    if not out.parent.is_dir():
        raise OutputError(f"{out.parent}: no such folder")

    # The direct write type: the target itself, or the intermediate llama.cpp quantizes from.
    direct = NATIVE_TYPES[ckpt.weight_dtype()] if out_type in LLAMA_QUANT_FTYPES else out_type
    form = arch.rerank  # a generative checkpoint served as a reranker: explicitly, or as its files say
    ranker = form is not None and (pooling == "rank" or (pooling is None and form.detect(ckpt)))
    planner = form.plan if form is not None and ranker else arch.plan or default_plan
    plan = planner(arch, ckpt, config, direct)
    if any(key == arch.key(Keys.LLM.POOLING_TYPE) for key, _, _ in plan.meta):  # a reranker: rank pooling
        if pooling not in (None, "rank"):
            raise UnsupportedError(f"{ckpt.architecture} is a reranker (rank pooling); --pooling does not apply")
    elif pooling == "rank":
        raise UnsupportedError(f"{ckpt.architecture} has no reranker form llama.cpp runs (--pooling rank)")
    else:
        plan.meta.extend(pooling_meta(arch.name, src, pooling))
    vocab = load_vocab(src, int(config["vocab_size"]))
    name = general_name(src.resolve().name, vocab)
    proj = None if text_only else projector(ckpt.architecture)
    if proj is not None:
        proj.check_vocab(vocab.tokens)
        if mmproj_path(out).exists() and not force:
            raise OutputError(f"{mmproj_path(out)} exists; pass --force to overwrite it")
        write_projector(proj, ckpt, mmproj_path(out), out_type, name=name)
    written = (mmproj_path(out),) if proj is not None else ()

    remove_stale_temps(out)
    tmp = temp_name(out)
    inter = temp_name(out, "unquantized")
    with removed_on_failure(*written), removed_on_failure(tmp, inter):
        try:
            if out_type in LLAMA_QUANT_FTYPES:
                write_gguf(plan, vocab, inter, direct, name=name, progress=progress)
                llama_quantize(inter, tmp, out_type)
            else:
                write_gguf(plan, vocab, tmp, direct, name=name, progress=progress)
            os.replace(tmp, out)
        except OSError as e:  # a full disk, a read-only folder, a file vanishing under us
            raise OutputError(f"cannot write {out}: {e.strerror or e}") from e
    return out
