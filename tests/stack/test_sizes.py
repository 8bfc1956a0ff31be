"""The plan's inputs (stack.gguf_info.read_info over serve.placement.read_shape) against independent sources: llama.cpp's own model size and layer count, and the
HF config the GGUF was converted from (KV width = head_dim x key/value heads)."""

from __future__ import annotations

import json
from pathlib import Path

import llama_cpp as ll
import pytest

from convert import convert_checkpoint
from stack.gguf_info import InfoError, read_info
from testkit.fixtures.build import build_fixture


def llama_cpp_numbers(path: Path) -> tuple[int, int]:
    params = ll.llama_model_default_params()
    model = ll.llama_model_load_from_file(str(path).encode(), params)
    assert model, f"llama.cpp could not load {path}"
    try:
        return int(ll.llama_model_size(model)), int(ll.llama_model_n_layer(model))
    finally:
        ll.llama_model_free(model)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["qwen3", "llama"])
def test_sizes_match_llama_cpp_and_the_hf_config(arch: str, tmp_path: Path) -> None:
    folder = build_fixture(arch)
    gguf = convert_checkpoint(folder, tmp_path / f"{arch}.gguf", "f16", progress=False)
    sizes = read_info(gguf)
    size, n_layer = llama_cpp_numbers(gguf)
    assert sizes.total_bytes == size
    assert sizes.shape.n_layers == n_layer == len(sizes.shape.layer_bytes)
    assert all(b > 0 for b in sizes.shape.layer_bytes)
    cfg = json.loads((folder / "config.json").read_text())
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    assert sizes.shape.n_embd_k_gqa == sizes.shape.n_embd_v_gqa == head_dim * cfg["num_key_value_heads"]
    assert sizes.shape.output_bytes > 0 and sizes.architecture == arch


def test_not_a_gguf(tmp_path: Path) -> None:
    path = tmp_path / "x.gguf"
    path.write_bytes(b"definitely not a gguf file" * 10)
    with pytest.raises(InfoError, match="not a readable GGUF"):
        read_info(path)
