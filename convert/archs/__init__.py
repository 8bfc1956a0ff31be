"""The table of architectures: HF class name -> `Arch` (convert.arch), one family module each.

Adding a family is one module that builds `Arch` values (helpers in convert.archs.common) and one line in
`_MODULES`. An architecture whose tensors do not map one-to-one (gpt-oss's MXFP4 blocks + scales, stacked
MoE experts) supplies its own `plan` function; everything else uses `plan.default_plan`.
"""

from __future__ import annotations

import importlib

from convert.arch import Arch
from convert.errors import UnsupportedError
from convert.mmproj import Projector

# Family modules, each exposing ARCHS: tuple[Arch, ...].
_MODULES = (
    "convert.archs.llama",
    "convert.archs.qwen",
    "convert.archs.gemma3",
    "convert.archs.gpt_oss",
    "convert.archs.phi3",
    "convert.archs.smollm3",
    "convert.archs.granite",
    "convert.archs.mistral3",
    "convert.archs.qwen2vl",
    "convert.archs.bert",
    "convert.archs.xlm_roberta",
    "convert.archs.nomic_bert",
    "convert.archs.modernbert",
)

# Image projector modules, each exposing PROJECTORS: tuple[Projector, ...] (written as NAME.mmproj.gguf).
_VISION_MODULES = (
    "convert.archs.gemma3_vision",
    "convert.archs.idefics3_vision",
    "convert.archs.mistral3_vision",
    "convert.archs.qwen25vl_vision",
)


def table() -> dict[str, Arch]:
    """HF architecture class name -> Arch, built on call (no module state to mutate)."""
    out: dict[str, Arch] = {}
    for modname in _MODULES:
        try:
            module = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            if e.name != modname:  # a real import error inside the module, not a family not written yet
                raise
            continue
        for arch in module.ARCHS:
            for hf_name in arch.hf_names:
                out[hf_name] = arch
    return out


def lookup(hf_name: str) -> Arch:
    archs = table()
    if hf_name not in archs:
        raise UnsupportedError(f"unsupported architecture {hf_name}; supported: {', '.join(sorted(archs))}")
    return archs[hf_name]


def projector(hf_name: str) -> Projector | None:
    """The image projector of a multimodal architecture, or None (a text-only architecture)."""
    for modname in _VISION_MODULES:
        for proj in importlib.import_module(modname).PROJECTORS:
            if hf_name in proj.hf_names:
                return proj
    return None


__all__ = ["lookup", "projector", "table"]
