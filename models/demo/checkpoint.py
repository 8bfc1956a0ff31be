"""Saving a trained demo model as a HuggingFace folder, MXFP4-packing gpt-oss experts, and reloading it
with transformers for a greedy check."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

# from where it is defined: transformers' typed exports (its TYPE_CHECKING imports) omit it
from transformers.utils.quantization_config import Mxfp4Config

from convert.mxfp4 import pack_mxfp4
from models.demo.fit import MXFP4_PARAMS, Example, held

# what real gpt-oss checkpoints leave unquantized
MXFP4_NOT_CONVERTED = ["model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]


def finish_tokenizer_config(folder: Path, class_name: str) -> None:
    """Name a class every transformers version knows, and say plainly that nothing adds bos/eos."""
    path = folder / "tokenizer_config.json"
    cfg = json.loads(path.read_text())
    cfg.update(tokenizer_class=class_name, add_bos_token=False, add_eos_token=False)
    for loading_only in ("is_local", "local_files_only"):  # what from_pretrained (a fine-tune) leaves behind
        cfg.pop(loading_only, None)
    path.write_text(json.dumps(dict(sorted(cfg.items())), indent=2) + "\n")


def save(model, tok, folder: Path, eos_ids: list[int]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    model.generation_config.eos_token_id = eos_ids
    model.generation_config.pad_token_id = model.config.pad_token_id
    model.generation_config.bos_token_id = model.config.bos_token_id
    model.generation_config.do_sample = False
    model.to(torch.bfloat16).save_pretrained(folder)
    tok.save_pretrained(folder)
    finish_tokenizer_config(folder, "PreTrainedTokenizerFast")


def pack_experts(folder: Path) -> None:
    """Replace the bf16 expert weights by MXFP4 `*_blocks`/`*_scales`, as gpt-oss checkpoints store them."""
    path = folder / "model.safetensors"
    tensors = load_file(path)
    packed: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        if MXFP4_PARAMS.search(name):
            blocks, scales = pack_mxfp4(t.float().transpose(-1, -2).contiguous().numpy())
            packed[f"{name}_blocks"] = torch.from_numpy(np.ascontiguousarray(blocks))
            packed[f"{name}_scales"] = torch.from_numpy(np.ascontiguousarray(scales))
        else:
            packed[name] = t
    save_file(dict(sorted(packed.items())), path, metadata={"format": "pt"})
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    config["quantization_config"] = {"quant_method": "mxfp4", "modules_to_not_convert": MXFP4_NOT_CONVERTED}
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


# --- check --------------------------------------------------------------------------------------


def load(folder: Path):
    """The saved folder in transformers, float32; MXFP4 experts dequantized by transformers itself (no GPU
    kernels needed), which checks our packing independently."""
    extra = {}
    if "quantization_config" in json.loads((folder / "config.json").read_text()):
        extra["quantization_config"] = Mxfp4Config(dequantize=True)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **extra)
    model.eval()
    return model


def greedy_hits(folder: Path, examples: list[Example], stop: list[int]) -> tuple[int, list[str]]:
    """Reload the saved folder with transformers and generate greedily from every prompt."""
    model = load(folder)
    misses = []
    with torch.no_grad():
        for e in examples:
            if e.held:  # greedy under the grammar's holds: every target the argmax of what is allowed at its step
                logits = held(model(input_ids=torch.tensor([e.prompt + e.completion])).logits, [e])
                picked = logits[0, len(e.prompt) - 1 : -1].argmax(-1).tolist()
                if picked != e.completion:
                    misses.append(e.label)
                continue
            out = model.generate(
                torch.tensor([e.prompt]),
                max_new_tokens=len(e.completion) + 8,
                do_sample=False,
                eos_token_id=stop,
                pad_token_id=model.config.pad_token_id,
            )
            if out[0, len(e.prompt) :].tolist() != e.completion:
                misses.append(e.label)
    return len(examples) - len(misses), misses
