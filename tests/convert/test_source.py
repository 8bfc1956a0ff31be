"""Reading checkpoints: sharded files with an index, bf16 words, row blocks; and the k-quant path."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFReader

from convert import convert_checkpoint
from convert.errors import ShapeError, SourceError
from convert.source import open_checkpoint, read_tensors, to_f32
from testkit.fixtures.build import build_fixture
from testkit.fixtures.synthetic import write_synthetic


def split_into_shards(src: Path, dst: Path, n: int) -> Path:
    """Re-save a single-file checkpoint as n shards plus model.safetensors.index.json."""
    import shutil

    from safetensors.numpy import load_file, save_file

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.safetensors"))
    tensors = load_file(src / "model.safetensors")
    names = sorted(tensors)
    weight_map = {}
    for i in range(n):
        part = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        chunk = {k: tensors[k] for k in names[i::n]}
        save_file(chunk, dst / part)
        weight_map.update(dict.fromkeys(chunk, part))
    (dst / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return dst


def test_sharded_checkpoint_converts_to_the_same_tensors(tmp_path: Path) -> None:
    src = build_fixture("qwen3")
    sharded = split_into_shards(src, tmp_path / "sharded", 3)
    a = convert_checkpoint(src, tmp_path / "one.gguf", "f32", progress=False)
    b = convert_checkpoint(sharded, tmp_path / "three.gguf", "f32", progress=False)
    ta = {t.name: t.data.tobytes() for t in GGUFReader(a).tensors}
    tb = {t.name: t.data.tobytes() for t in GGUFReader(b).tensors}
    assert ta == tb and len(ta) > 10


def test_tensor_missing_from_its_shard_is_reported(tmp_path: Path) -> None:
    sharded = split_into_shards(build_fixture("qwen3"), tmp_path / "sharded", 2)
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.layers.9.mlp.up_proj.weight"] = "model-00001-of-00002.safetensors"
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(SourceError, match=re.escape("model.layers.9.mlp.up_proj.weight")):
        open_checkpoint(sharded)


def test_bf16_words_and_row_blocks(tmp_path: Path) -> None:
    src = write_synthetic(tmp_path / "m", hidden=64, layers=1, vocab=300, ff=128)
    ref = read_tensors(src)["model.embed_tokens.weight"]
    whole = ref.read()
    assert whole.dtype == np.uint16 and whole.shape == (300, 64)
    blocks = list(ref.blocks(block_bytes=64 * 2 * 7))  # 7 rows a block
    assert [len(b) for b in blocks] == [7] * 42 + [6]
    assert np.array_equal(np.concatenate(blocks), whole)
    f = to_f32(whole, "BF16")
    # bf16 is the top half of float32: widening then truncating gives the same words back
    assert np.array_equal((f.view(np.uint32) >> 16).astype(np.uint16), whole)
    assert 0.005 < float(f.std()) < 0.05


def test_missing_layer_tensor_is_reported(tmp_path: Path) -> None:
    import shutil

    from safetensors.numpy import load_file, save_file

    src = tmp_path / "f32"

    shutil.copytree(build_fixture("qwen2"), src)
    tensors = load_file(src / "model.safetensors")
    del tensors["model.layers.1.mlp.down_proj.weight"]
    save_file(tensors, src / "model.safetensors")
    with pytest.raises(ShapeError, match=re.escape("blk.1.ffn_down.weight")):
        convert_checkpoint(src, tmp_path / "x.gguf", "f32", progress=False)
    assert not (tmp_path / "x.gguf").exists()


@pytest.mark.slow
def test_k_quant_through_llama_cpp_leaves_no_intermediate(tmp_path: Path) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    out = convert_checkpoint(build_fixture("qwen2"), tmp_path / "m.gguf", "q4_k_m", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf"]
    reader = GGUFReader(out)
    field = reader.fields["general.file_type"]
    assert int(field.parts[field.data[0]][0]) == 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    # rows of 64 are too short for Q4_K's 256-wide blocks, so llama.cpp falls back to smaller quants
    assert types["blk.0.ffn_up.weight"] not in ("F32", "F16", "BF16") and types["blk.0.attn_norm.weight"] == "F32"
    llm = llama_cpp.Llama(str(out), verbose=False, n_ctx=64)
    assert len(llm.tokenize(b"hello world")) > 0
    llm.close()
