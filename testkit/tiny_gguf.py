"""A tiny random llama-shaped GGUF written with gguf-py, so engine tests need nothing else.

Byte-level vocabulary (every byte a token, so any text tokenizes) plus the special tokens the server cares
about, and a ChatML-like template. Random weights: the point is a real llama.cpp
model that loads in milliseconds, not sensible text.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import gguf
import numpy as np

from testkit.fixtures.synthetic import byte_alphabet

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]


def build_tiny_gguf(
    seed: int = 0, n_embd: int = 64, n_layer: int = 2, n_ctx: int = 32768, template: str = TEMPLATE
) -> Path:
    """`template`: the chat template the GGUF carries (ChatML-like by default)."""
    own = "" if template == TEMPLATE else "-" + hashlib.sha256(template.encode()).hexdigest()[:12]
    out = REPO / ".cache" / "serve" / f"tiny-{seed}-{n_embd}-{n_layer}-{n_ctx}{own}.gguf"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    alphabet = byte_alphabet()
    tokens = alphabet + SPECIALS
    types = [gguf.TokenType.NORMAL] * 256 + [gguf.TokenType.CONTROL] * 3 + [gguf.TokenType.USER_DEFINED] * 2
    n_vocab, n_head, n_ff = len(tokens), 4, n_embd * 2
    tmp = out.with_suffix(".tmp")
    w = gguf.GGUFWriter(str(tmp), "llama")
    w.add_name("tiny")
    w.add_context_length(n_ctx)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges([f"{alphabet[ord('a')]} {alphabet[ord('b')]}"])
    w.add_bos_token_id(256)
    w.add_eos_token_id(258)
    w.add_add_bos_token(False)
    w.add_chat_template(template)

    def t(name: str, *shape: int) -> None:
        w.add_tensor(name, (rng.standard_normal(shape) * 0.5).astype(np.float32))

    t("token_embd.weight", n_vocab, n_embd)
    w.add_tensor("output_norm.weight", np.ones(n_embd, np.float32))
    # Special tokens get a zero output row: with random logits far above 0, greedy decoding never ends on its own,
    # so tests control the length with max_tokens.
    head = (rng.standard_normal((n_vocab, n_embd)) * 0.5).astype(np.float32)
    head[256:] = 0.0
    w.add_tensor("output.weight", head)
    for i in range(n_layer):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            t(f"blk.{i}.{name}.weight", n_embd, n_embd)
        t(f"blk.{i}.ffn_gate.weight", n_ff, n_embd)
        t(f"blk.{i}.ffn_up.weight", n_ff, n_embd)
        t(f"blk.{i}.ffn_down.weight", n_embd, n_ff)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tmp.rename(out)
    return out
