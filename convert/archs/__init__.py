"""Architectures as data: HF class name -> `Arch` (GGUF arch, metadata from config, tensor names, transforms).

Adding a family is one module that builds `Arch` values and one line in `_MODULES`. An architecture whose
tensors do not map one-to-one (gpt-oss's MXFP4 blocks + scales) supplies its own `plan` function; everything
else uses `plan.default_plan`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from gguf import MODEL_ARCH, MODEL_ARCH_NAMES, MODEL_TENSOR, GGUFValueType, Keys

from convert.errors import UnsupportedError

if TYPE_CHECKING:
    from convert.plan import Plan
    from convert.source import Checkpoint

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


# --- helpers the family modules share ------------------------------------------------------------------------


def rope_theta(config: Config, layer_kind: str = "full_attention") -> float | None:
    """rope_theta from transformers 5's rope_parameters (flat or per layer kind) or the old flat key."""
    params = config.get("rope_parameters") or {}
    if layer_kind in params and isinstance(params[layer_kind], dict):
        params = params[layer_kind]
    elif layer_kind != "full_attention":
        return config.get("rope_local_base_freq")
    theta = params.get("rope_theta", config.get("rope_theta"))
    return None if theta is None else float(theta)


def rope_scaling(config: Config) -> dict[str, Any]:
    params = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if "full_attention" in params:
        params = params["full_attention"]
    return params if isinstance(params, dict) else {}


def head_dim(config: Config) -> int:
    return int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])


def n_kv_heads(config: Config) -> int:
    return int(config.get("num_key_value_heads") or config["num_attention_heads"])


def common_meta() -> tuple[Meta, ...]:
    """Keys every decoder-only family here writes the same way."""
    L = Keys.LLM
    A = Keys.Attention
    U32, F32 = GGUFValueType.UINT32, GGUFValueType.FLOAT32
    return (
        Meta(L.CONTEXT_LENGTH, "max_position_embeddings", U32),
        Meta(L.EMBEDDING_LENGTH, "hidden_size", U32),
        Meta(L.BLOCK_COUNT, "num_hidden_layers", U32),
        Meta(L.FEED_FORWARD_LENGTH, "intermediate_size", U32),
        Meta(A.HEAD_COUNT, "num_attention_heads", U32),
        Meta(A.HEAD_COUNT_KV, n_kv_heads, U32),
        Meta(A.KEY_LENGTH, head_dim, U32),
        Meta(A.VALUE_LENGTH, head_dim, U32),
        Meta(A.LAYERNORM_RMS_EPS, "rms_norm_eps", F32),
        Meta(Keys.Rope.FREQ_BASE, rope_theta, F32),
        Meta(Keys.Rope.DIMENSION_COUNT, head_dim, U32),
        Meta(Keys.Rope.SCALING_TYPE, lambda c: _scaling_type(c), GGUFValueType.STRING),
        Meta(Keys.Rope.SCALING_FACTOR, lambda c: _scaling_factor(c), F32),
        Meta(Keys.Rope.SCALING_ORIG_CTX_LEN, lambda c: _scaling_orig_ctx(c), U32),
        Meta(L.VOCAB_SIZE, "vocab_size", U32),
    )


# rope scaling types written as metadata for every family (others are an arch's own business or refused)
ROPE_TYPES_AS_METADATA = ("linear", "yarn")


def check_rope(config: Config, also: tuple[str, ...] = ()) -> None:
    """Refuse a rope scaling llama.cpp would silently run without (dynamic NTK, longrope, ...)."""
    params = rope_scaling(config)
    kind = params.get("rope_type") or params.get("type")
    if kind not in (None, "default", *ROPE_TYPES_AS_METADATA, *also):
        raise UnsupportedError(
            f"rope scaling {kind!r} is not supported; supported: {', '.join(('default', *ROPE_TYPES_AS_METADATA, *also))}"
        )


def _scaling_type(config: Config) -> str | None:
    kind = rope_scaling(config).get("rope_type") or rope_scaling(config).get("type")
    return kind if kind in ROPE_TYPES_AS_METADATA else None


def _scaling_factor(config: Config) -> float | None:
    return rope_scaling(config).get("factor") if _scaling_type(config) else None


def _scaling_orig_ctx(config: Config) -> int | None:
    if _scaling_type(config) == "yarn":
        return rope_scaling(config).get("original_max_position_embeddings")
    return None


def dense_shapes() -> dict[MODEL_TENSOR, Callable[[Config], tuple[int, ...]]]:
    """Expected shapes of a dense transformer's tensors (numpy order: out, in)."""
    T = MODEL_TENSOR

    def q(c: Config) -> int:
        return int(c["num_attention_heads"]) * head_dim(c)

    def kv(c: Config) -> int:
        return n_kv_heads(c) * head_dim(c)

    return {
        T.TOKEN_EMBD: lambda c: (c["vocab_size"], c["hidden_size"]),
        T.OUTPUT: lambda c: (c["vocab_size"], c["hidden_size"]),
        T.OUTPUT_NORM: lambda c: (c["hidden_size"],),
        T.ATTN_NORM: lambda c: (c["hidden_size"],),
        T.FFN_NORM: lambda c: (c["hidden_size"],),
        T.ATTN_Q: lambda c: (q(c), c["hidden_size"]),
        T.ATTN_K: lambda c: (kv(c), c["hidden_size"]),
        T.ATTN_V: lambda c: (kv(c), c["hidden_size"]),
        T.ATTN_OUT: lambda c: (c["hidden_size"], q(c)),
        T.FFN_GATE: lambda c: (c["intermediate_size"], c["hidden_size"]),
        T.FFN_UP: lambda c: (c["intermediate_size"], c["hidden_size"]),
        T.FFN_DOWN: lambda c: (c["hidden_size"], c["intermediate_size"]),
    }


DENSE_BLOCK = (
    MODEL_TENSOR.ATTN_NORM,
    MODEL_TENSOR.ATTN_Q,
    MODEL_TENSOR.ATTN_K,
    MODEL_TENSOR.ATTN_V,
    MODEL_TENSOR.ATTN_OUT,
    MODEL_TENSOR.FFN_GATE,
    MODEL_TENSOR.FFN_UP,
    MODEL_TENSOR.FFN_DOWN,
)


# --- the table -----------------------------------------------------------------------------------------------

# Family modules, each exposing ARCHS: tuple[Arch, ...]. gpt-oss plugs in here with one entry.
_MODULES = ("convert.archs.llama", "convert.archs.qwen", "convert.archs.gemma3", "convert.archs.gpt_oss")


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


def iter_blocks(config: Config) -> Iterator[int]:
    return iter(range(int(config["num_hidden_layers"])))


__all__ = ["Arch", "Config", "Meta", "Transform", "lookup", "table"]
