"""ModernBERT encoders (ModernBertModel, and the encoder of ModernBertForMaskedLM) -> llama.cpp's `modern-bert` arch.

llama.cpp's modern-bert graph (src/models/modern-bert.cpp): token embedding, LayerNorm without bias, pre-norm blocks
(layer 0 without an attention norm, as ModernBERT's Identity), fused qkv without bias, NeoX rotary with one theta for
global layers and another for local ones, a symmetric sliding window (|i - j| <= local_attention / 2, transformers'
bidirectional sliding mask exactly) on the local layers, GeGLU (`Wi` holds input and gate halves, as ggml's geglu
splits them), a final LayerNorm. The checkpoint's names (`layers.N.attn.Wqkv`, `mlp.Wi`, ...) are TensorNameMap's.

Written from config.json: which layers slide (transformers 5's `layer_types`, else every
`global_attn_every_n_layers`-th layer from 0 is global) as the per-layer sliding_window_pattern, the window, both
rope thetas. Refused by name: biases (attention_bias, mlp_bias, norm_bias: the graph adds none) and an activation
other than GELU. The vocabulary is byte-level BPE ([CLS] text [SEP]), convert.vocab_bpe's.
"""

from __future__ import annotations

from gguf import MODEL_ARCH, MODEL_TENSOR, GGUFValueType, Keys

from convert.arch import Arch, Config, Meta
from convert.archs.bert import encoder_meta, hidden
from convert.archs.common import rope_theta
from convert.errors import UnsupportedError

T = MODEL_TENSOR
U32, F32 = GGUFValueType.UINT32, GGUFValueType.FLOAT32
GLOBAL_THETA, LOCAL_THETA = 160000.0, 10000.0  # ModernBertConfig's defaults
BIASES = ("attention_bias", "mlp_bias", "norm_bias")


def sliding_layers(config: Config) -> list[bool]:
    """Per layer: True where it attends within the local window."""
    n = int(config["num_hidden_layers"])
    if types := config.get("layer_types"):
        return [t == "sliding_attention" for t in types]
    every = int(config.get("global_attn_every_n_layers") or 3)
    return [i % every != 0 for i in range(n)]


def theta(config: Config, kind: str) -> float:
    if kind == "full_attention":
        return rope_theta(config, kind) or float(config.get("global_rope_theta") or GLOBAL_THETA)
    params = (config.get("rope_parameters") or {}).get(kind) or {}
    return float(params.get("rope_theta") or config.get("local_rope_theta") or LOCAL_THETA)


def check_modernbert(config: Config) -> None:
    if biased := [k for k in BIASES if config.get(k)]:
        raise UnsupportedError(f"ModernBERT with {biased[0]}=true: llama.cpp's modern-bert graph adds no biases")
    act = config.get("hidden_activation", "gelu")
    if act != "gelu":
        raise UnsupportedError(f"ModernBERT with hidden_activation {act!r}: converted here with GELU (GeGLU) only")
    if len(sliding_layers(config)) != int(config["num_hidden_layers"]):
        raise UnsupportedError("ModernBERT whose layer_types does not list every layer")


def _meta_window(c: Config) -> int:
    return int(c.get("local_attention") or 128)


MODERNBERT = Arch(
    hf_names=("ModernBertModel", "ModernBertForMaskedLM"),
    gguf_arch=MODEL_ARCH.MODERN_BERT,
    meta=(
        *encoder_meta("norm_eps", 1e-5),
        Meta(Keys.Attention.SLIDING_WINDOW, _meta_window, U32),
        Meta(Keys.Attention.SLIDING_WINDOW_PATTERN, sliding_layers, GGUFValueType.ARRAY),
        Meta(Keys.Rope.FREQ_BASE, lambda c: theta(c, "full_attention"), F32),
        Meta(Keys.Rope.FREQ_BASE_SWA, lambda c: theta(c, "sliding_attention"), F32),
    ),
    shapes={
        T.TOKEN_EMBD: lambda c: (c["vocab_size"], c["hidden_size"]),
        T.TOKEN_EMBD_NORM: hidden,
        T.ATTN_NORM: hidden,
        T.ATTN_QKV: lambda c: (3 * int(c["hidden_size"]), int(c["hidden_size"])),
        T.ATTN_OUT: lambda c: (int(c["hidden_size"]), int(c["hidden_size"])),
        T.FFN_NORM: hidden,
        T.FFN_UP: lambda c: (2 * int(c["intermediate_size"]), int(c["hidden_size"])),
        T.FFN_DOWN: lambda c: (int(c["hidden_size"]), int(c["intermediate_size"])),
        T.OUTPUT_NORM: hidden,
    },
    required=(T.ATTN_QKV, T.ATTN_OUT, T.FFN_NORM, T.FFN_UP, T.FFN_DOWN),
    rename=(("model.", ""),),
    skip_prefixes=("head.", "decoder."),  # the masked-LM head
    check=check_modernbert,
)

ARCHS = (MODERNBERT,)
