"""The types an architecture and its plan are described with: `Arch` (GGUF arch, metadata from config, tensor
names, transforms), `Meta` (one GGUF key), `Transform` (a weight change applied block by block), and what a
planner returns: `Plan`, a list of `OutTensor`.

The table of architectures lives in convert.archs; the planner (convert.plan) builds plans from these types.
Keeping them here, apart from both, is what lets a family module import the planner without an import cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from gguf import MODEL_ARCH, MODEL_ARCH_NAMES, MODEL_TENSOR, GGMLQuantizationType, GGUFValueType

from convert.source import Checkpoint, TensorRef

Config = Mapping[str, Any]


@dataclass(frozen=True)
class Meta:
    """One GGUF key: its name ({arch} filled in), where its value comes from, its type.

    `src` is a config key (the first of several that is present wins) or a function of the config; a value of
    None means "leave the key out" (llama.cpp's default applies).
    """

    key: str
    src: str | tuple[str, ...] | Callable[[Config], Any]
    vtype: GGUFValueType
    default: Any = None

    def value(self, config: Config) -> Any:
        if callable(self.src):
            return self.src(config)
        keys = (self.src,) if isinstance(self.src, str) else self.src
        return next((config[k] for k in keys if config.get(k) is not None), self.default)


@dataclass(frozen=True)
class Transform:
    """A weight change applied to row blocks (float32 in, float32 out).

    `align(config)` is how many rows a block must hold a multiple of (a head, for the rope permutation), so the
    tensor can be streamed block by block instead of held whole.
    """

    fn: Callable[[np.ndarray, Config], np.ndarray]
    align: Callable[[Config], int] = lambda c: 1


@dataclass(frozen=True)
class RerankForm:
    """How a generative checkpoint of an arch is served as a reranker (pooling `rank`), as llama.cpp's converter
    does it: `detect` says from the checkpoint's own files whether it is one (the converter's --pooling rank says so
    explicitly), `plan` is its plan as one (a classifier head in place of the LM head, the rank metadata)."""

    detect: Callable[[Checkpoint], bool]
    plan: Callable[[Arch, Checkpoint, Config, str], Plan]


@dataclass(frozen=True)
class Arch:
    hf_names: tuple[str, ...]
    gguf_arch: MODEL_ARCH
    meta: tuple[Meta, ...]
    # MODEL_TENSOR -> Transform; tensors not named here are copied (and cast) unchanged
    transforms: Mapping[MODEL_TENSOR, Transform] = field(default_factory=dict)
    # expected numpy-order shapes, checked against every tensor of that type
    shapes: Mapping[MODEL_TENSOR, Callable[[Config], tuple[int, ...]]] = field(default_factory=dict)
    # every block must have these
    required: tuple[MODEL_TENSOR, ...] = ()
    # kept float32 whatever --type says (a MoE router: its top-k picks the experts, as llama.cpp's converter keeps it)
    f32_tensors: tuple[MODEL_TENSOR, ...] = ()
    # HF name prefixes rewritten before the name map (multimodal wrappers keep the text model under a prefix)
    rename: tuple[tuple[str, str], ...] = ()
    # HF name prefixes/suffixes that are not part of the text model and are dropped
    skip_prefixes: tuple[str, ...] = ()
    skip_suffixes: tuple[str, ...] = (".rotary_emb.inv_freq",)
    # the part of config.json that describes the text model (Gemma3ForConditionalGeneration: "text_config")
    text_config: str | None = None
    # refuses configs llama.cpp's graph for this arch cannot reproduce (raises UnsupportedError)
    check: Callable[[Config], None] | None = None
    # a planner of its own (many-to-one tensors, packed formats); None = plan.default_plan
    plan: Callable[[Arch, Checkpoint, Config, str], Plan] | None = None
    # its reranker form (Qwen3-Reranker); None: none
    rerank: RerankForm | None = None

    @property
    def name(self) -> str:
        return MODEL_ARCH_NAMES[self.gguf_arch]

    def config(self, full: Config) -> Config:
        """The text model's config, with the top-level keys the text config may lack."""
        if self.text_config is None:
            return full
        inner = dict(full.get(self.text_config) or {})
        for k, v in full.items():
            inner.setdefault(k, v)
        return inner

    def key(self, template: str) -> str:
        return template.format(arch=self.name)


@dataclass(frozen=True)
class OutTensor:
    """One GGUF tensor. `produce()` yields arrays whose bytes, concatenated, are exactly `nbytes`.

    `sources` is set when the output is these source tensors' bytes, concatenated and unchanged, so the writer
    may copy the file ranges in the kernel instead of reading them into memory.
    """

    name: str
    shape: tuple[int, ...]  # numpy order (outermost first), in elements
    ggml_type: GGMLQuantizationType
    nbytes: int
    produce: Callable[[], Iterator[np.ndarray]]
    sources: tuple[TensorRef, ...] = ()


@dataclass(frozen=True)
class Plan:
    arch: Arch
    config: Config
    tensors: list[OutTensor]
    meta: list[tuple[str, Any, GGUFValueType]]


__all__ = ["Arch", "Config", "Meta", "OutTensor", "Plan", "RerankForm", "Transform"]
