"""NomicBERT encoders (nomic-embed-text v1 / v1.5) -> llama.cpp's `nomic-bert` arch.

llama.cpp's nomic-bert graph (src/models/bert.cpp): token embedding + token type row 0, LayerNorm (`emb_ln`), then
post-norm blocks: fused qkv without bias, NeoX-style rotary on q and k (transformers' rotate_half), output
projection, norm1; SwiGLU (down(silu(gate(x)) * up(x)), no biases: `fc12` is the gate, `fc11` the up), norm2. No
position table. The checkpoint's own names (`encoder.layers.N.attn.Wqkv`, `mlp.fc11`, ..., which transformers'
NomicBertModel also saves) are TensorNameMap's.

config.json comes in two spellings: transformers' (hidden_size, rope_parameters, hidden_act "silu") and the
original remote-code one (n_embd, rotary_emb_base, activation_function "swiglu", n_positions with
max_trained_positions, which llama.cpp's converter takes as the context). Settings the graph cannot reproduce are
refused by name: biases in qkv or the MLP (the graph adds none), pre-norm blocks, partial / interleaved / scaled
rotary, a causal mask, another activation, and the MoE variant (nomic-embed-text-v2-moe, llama.cpp's
nomic-bert-moe, which transformers cannot run to check it against).
"""

from __future__ import annotations

import re
from typing import Any

from gguf import MODEL_ARCH, MODEL_TENSOR, GGUFValueType, Keys

from convert.arch import Arch, Config, Meta, Plan
from convert.archs.bert import encoder_meta, hidden
from convert.archs.common import rope_theta
from convert.errors import UnsupportedError
from convert.plan import default_plan
from convert.source import Checkpoint

T = MODEL_TENSOR
U32, F32 = GGUFValueType.UINT32, GGUFValueType.FLOAT32
# the remote-code config's names -> transformers'
ALIASES = {
    "n_embd": "hidden_size", "n_layer": "num_hidden_layers", "n_head": "num_attention_heads",
    "n_inner": "intermediate_size", "layer_norm_epsilon": "layer_norm_eps", "activation_function": "hidden_act",
}  # fmt: skip
SWIGLU = ("silu", "swiglu")
DEFAULT_THETA = 1000.0  # transformers' NomicBertConfig.default_theta (and the release's rotary_emb_base)
# (config key, the value llama.cpp's graph needs): refused when present with another value
FIXED: tuple[tuple[str, Any, str], ...] = (
    ("qkv_proj_bias", False, "a qkv bias"),
    ("mlp_fc1_bias", False, "MLP biases"),
    ("mlp_fc2_bias", False, "MLP biases"),
    ("prenorm", False, "pre-norm blocks"),
    ("causal", False, "a causal mask"),
    ("rotary_emb_fraction", 1.0, "rotary on part of each head"),
    ("rotary_emb_interleaved", False, "interleaved rotary"),
    ("rotary_emb_scale_base", None, "xPos-scaled rotary"),
)
BLOCK_BIAS = re.compile(r"blk\.\d+\.(attn_qkv|ffn_up|ffn_gate|ffn_down)\.bias")


def normalized(config: Config) -> dict[str, Any]:
    """transformers' key names whichever spelling config.json uses; the context as llama.cpp's converter sets it."""
    out = dict(config)
    for old, new in ALIASES.items():
        if old in config and new not in config:
            out[new] = config[old]
    ctx = config.get("max_trained_positions") or config.get("max_position_embeddings") or config.get("n_positions")
    out["max_position_embeddings"] = ctx
    out["rope_theta"] = rope_theta(config) or config.get("rotary_emb_base") or DEFAULT_THETA
    return out


def check_nomic(config: Config) -> None:
    if config.get("moe_every_n_layers"):
        raise UnsupportedError(
            "NomicBert with moe_every_n_layers (nomic-embed-text-v2-moe): llama.cpp's nomic-bert-moe is not "
            "converted here (transformers has no MoE NomicBert to check it against)"
        )
    c = normalized(config)
    if str(c.get("hidden_act", "silu")) not in SWIGLU:
        raise UnsupportedError(f"NomicBert with hidden_act {c.get('hidden_act')!r}: llama.cpp's nomic-bert is SwiGLU")
    for key, want, what in FIXED:
        if key in config and config[key] != want:
            raise UnsupportedError(f"NomicBert with {key}={config[key]!r} ({what}): llama.cpp's nomic-bert has none")


def plan_nomic(arch: Arch, ckpt: Checkpoint, config: Config, out_type: str) -> Plan:
    plan = default_plan(arch, ckpt, normalized(config), out_type)
    if biased := [t.name for t in plan.tensors if BLOCK_BIAS.fullmatch(t.name)]:
        raise UnsupportedError(f"NomicBert with biases ({', '.join(biased[:3])}): llama.cpp's nomic-bert adds none")
    return plan


def ffn_in(c: Config) -> tuple[int, int]:
    return (int(c["intermediate_size"]), int(c["hidden_size"]))


NOMIC = Arch(
    hf_names=("NomicBertModel",),
    gguf_arch=MODEL_ARCH.NOMIC_BERT,
    meta=(
        *encoder_meta("layer_norm_eps", 1e-12),
        Meta(Keys.Rope.FREQ_BASE, "rope_theta", F32),
        Meta(Keys.Tokenizer.TOKEN_TYPE_COUNT, "type_vocab_size", U32, 2),
    ),
    shapes={
        T.TOKEN_EMBD: lambda c: (c["vocab_size"], c["hidden_size"]),
        T.TOKEN_TYPES: lambda c: (c.get("type_vocab_size", 2), c["hidden_size"]),
        T.TOKEN_EMBD_NORM: hidden,
        T.ATTN_QKV: lambda c: (3 * int(c["hidden_size"]), int(c["hidden_size"])),
        T.ATTN_OUT: lambda c: (int(c["hidden_size"]), int(c["hidden_size"])),
        T.ATTN_OUT_NORM: hidden,
        T.FFN_UP: ffn_in,
        T.FFN_GATE: ffn_in,
        T.FFN_DOWN: lambda c: (int(c["hidden_size"]), int(c["intermediate_size"])),
        T.LAYER_OUT_NORM: hidden,
    },
    required=(T.ATTN_QKV, T.ATTN_OUT, T.ATTN_OUT_NORM, T.FFN_UP, T.FFN_GATE, T.FFN_DOWN, T.LAYER_OUT_NORM),
    f32_tensors=(T.TOKEN_TYPES,),
    skip_suffixes=(".rotary_emb.inv_freq", "embeddings.position_ids", "embeddings.token_type_ids"),
    check=check_nomic,
    plan=plan_nomic,
)

ARCHS = (NOMIC,)
