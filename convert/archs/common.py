"""Helpers the family modules share: rope parameters, the common metadata keys, dense tensor shapes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from gguf import MODEL_TENSOR, GGUFValueType, Keys

from convert.arch import Arch, Config, Meta
from convert.errors import UnsupportedError


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


def multimodal(text: Arch, hf_name: str) -> Arch:
    """The text model of a multimodal release (Gemma 3, Mistral 3): its tensors under a prefix (transformers 5:
    model.language_model.*, older: language_model.model.*), its hyperparameters in config.json's text_config;
    the vision tower and projector are dropped."""
    return replace(
        text,
        hf_names=(hf_name,),
        rename=(
            ("model.language_model.", "model."),
            ("language_model.model.", "model."),
            ("language_model.lm_head.", "lm_head."),
        ),
        skip_prefixes=(
            "model.vision_tower.",
            "vision_tower.",
            "model.multi_modal_projector.",
            "multi_modal_projector.",
        ),
        text_config="text_config",
    )
