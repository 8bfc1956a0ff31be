"""The serve benchmarks' models: synthetic GGUFs with real models' shapes and random weights, written here with
gguf-py (nothing is downloaded), cached under .cache/serve/bench/.

- `qwen2_330m()`: qwen2-0.5B's shape with 12 of its 24 layers, q8_0 (about 315M parameters, its 151,936-token
  vocabulary and tied embeddings, so the output head weighs as much as in the real model).
- `smollm_135m_q4()`: SmolLM2-135M's shape (llama, 30 layers, hidden 576, 9 heads over 3 kv heads, 49,152-token
  vocabulary, tied), written in f16 and quantized by llama.cpp to Q4_0: a small real-shaped Q4 model.

Special tokens get zero embedding rows, so they never win greedy decoding and every request generates exactly
max_tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from testkit.fixtures.synthetic import byte_alphabet

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "serve" / "bench"
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

QWEN2_330M = dict(
    arch="qwen2",
    pre="qwen2",
    n_vocab=151936,
    n_embd=896,
    n_layer=12,
    n_head=14,
    n_head_kv=2,
    n_ff=4864,
    n_ctx=4096,
    rope_base=1_000_000.0,
    qkv_bias=True,
)
SMOLLM_135M = dict(
    arch="llama",
    pre="smollm",
    n_vocab=49152,
    n_embd=576,
    n_layer=30,
    n_head=9,
    n_head_kv=3,
    n_ff=1536,
    n_ctx=8192,
    rope_base=100_000.0,
    qkv_bias=False,
)


def qwen2_330m() -> Path:
    return _build("qwen2-synthetic-12x896-151936-q8_0.gguf", QWEN2_330M, "q8_0")


def smollm_135m_q4() -> Path:
    out = CACHE / "smollm2-135m-synthetic-q4_0.gguf"
    if out.exists():
        return out
    f16 = _build("smollm2-135m-synthetic-f16.gguf", SMOLLM_135M, "f16")
    _quantize(f16, out, ftype=2)  # LLAMA_FTYPE_MOSTLY_Q4_0
    return out


def _quantize(src: Path, out: Path, ftype: int) -> None:
    import llama_cpp as ll

    params = ll.llama_model_quantize_default_params()
    params.ftype = ftype
    tmp = out.with_suffix(".tmp")
    if ll.llama_model_quantize(str(src).encode(), str(tmp).encode(), params) != 0:
        raise RuntimeError(f"llama.cpp could not quantize {src}")
    tmp.rename(out)


def _build(name: str, s: dict, kind: str) -> Path:
    import gguf
    from gguf.quants import quantize

    out = CACHE / name
    if out.exists():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    n_vocab, n_embd, n_ff = s["n_vocab"], s["n_embd"], s["n_ff"]
    head_dim = n_embd // s["n_head"]
    kv = head_dim * s["n_head_kv"]
    byte_chars = byte_alphabet()
    tokens = [byte_chars[i] if i < 256 else f"t{i}" for i in range(n_vocab - len(SPECIALS))] + SPECIALS
    tmp = out.with_suffix(".tmp")
    w = gguf.GGUFWriter(str(tmp), s["arch"])
    w.add_name(out.stem)
    w.add_context_length(s["n_ctx"])
    w.add_embedding_length(n_embd)
    w.add_block_count(s["n_layer"])
    w.add_feed_forward_length(n_ff)
    w.add_head_count(s["n_head"])
    w.add_head_count_kv(s["n_head_kv"])
    w.add_rope_freq_base(s["rope_base"])
    w.add_layer_norm_rms_eps(1e-6)
    if s["arch"] == "llama":
        w.add_rope_dimension_count(head_dim)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if kind == "q8_0" else gguf.LlamaFileType.MOSTLY_F16)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(s["pre"])
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.NORMAL] * (n_vocab - len(SPECIALS)) + [gguf.TokenType.CONTROL] * len(SPECIALS))
    w.add_token_merges(["t h"])
    w.add_bos_token_id(n_vocab - 3)
    w.add_eos_token_id(n_vocab - 1)
    w.add_add_bos_token(False)

    def matrix(name: str, rows: int, cols: int, scale: float = 0.05, zero_rows: slice | None = None) -> None:
        data = rng.standard_normal((rows, cols), dtype=np.float32) * scale
        if zero_rows is not None:
            data[zero_rows] = 0.0  # special tokens never win: every request runs to max_tokens
        if kind == "q8_0":
            q = gguf.GGMLQuantizationType.Q8_0
            w.add_tensor(name, quantize(data, q), raw_dtype=q)
        else:
            w.add_tensor(name, data.astype(np.float16))

    def vector(name: str, n: int, value: float = 1.0) -> None:
        w.add_tensor(name, np.full(n, value, np.float32))

    add: Callable[..., None] = matrix
    add("token_embd.weight", n_vocab, n_embd, 0.5, slice(n_vocab - len(SPECIALS), n_vocab))  # tied: the head too
    vector("output_norm.weight", n_embd)
    for i in range(s["n_layer"]):
        vector(f"blk.{i}.attn_norm.weight", n_embd)
        vector(f"blk.{i}.ffn_norm.weight", n_embd)
        add(f"blk.{i}.attn_q.weight", n_embd, n_embd)
        add(f"blk.{i}.attn_k.weight", kv, n_embd)
        add(f"blk.{i}.attn_v.weight", kv, n_embd)
        if s["qkv_bias"]:
            vector(f"blk.{i}.attn_q.bias", n_embd, 0.0)
            vector(f"blk.{i}.attn_k.bias", kv, 0.0)
            vector(f"blk.{i}.attn_v.bias", kv, 0.0)
        add(f"blk.{i}.attn_output.weight", n_embd, n_embd)
        add(f"blk.{i}.ffn_gate.weight", n_ff, n_embd)
        add(f"blk.{i}.ffn_up.weight", n_ff, n_embd)
        add(f"blk.{i}.ffn_down.weight", n_embd, n_ff)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tmp.rename(out)
    return out
