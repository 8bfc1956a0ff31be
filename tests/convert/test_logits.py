"""Each family converted, run by llama.cpp, compared with transformers on the same token ids.

Tolerances (max |delta logit| as a fraction of transformers' logit range over all prompts; top-1 agreement
over all positions) are convert.verify.TOLERANCES:
  f32   1e-3, 100 %   (measured: 1e-6 .. 2e-4; gemma3's GELU in llama.cpp is the largest)
  f16   2e-2,  95 %   (measured about 1e-3, 100 %)
  bf16  5e-2,  90 %   (measured about 1e-2, 96-99 %: rounding flips near-tied logits of these random models)
  q8_0  8e-2,  85 %   (measured 1-4 %, 87-100 %); its bytes must also equal llama.cpp's own q8_0 quantizer's.
llama.cpp runs with an f32 KV cache so the cache adds no rounding of its own.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest

llama_cpp = pytest.importorskip("llama_cpp")
pytest.importorskip("transformers")

from gguf import GGUFReader  # noqa: E402

from convert.verify import TOLERANCES, compare, gguf_logits  # noqa: E402
from testkit.fixtures.build import DENSE_ARCHES  # noqa: E402

pytestmark = pytest.mark.slow


def check(reference, converted, arch: str, out_type: str) -> None:
    ref = reference(arch)
    got = gguf_logits(converted(arch, out_type), [ids for ids, _ in ref])
    c = compare([r for _, r in ref], got)
    rel_tol, top1_tol = TOLERANCES[out_type]
    assert c.positions >= 40
    assert c.relative <= rel_tol, f"{arch} {out_type}: max |delta| {c.max_delta} of range {c.logit_range}"
    assert c.top1 >= top1_tol, f"{arch} {out_type}: top-1 agreement {c.top1:.1%}"


@pytest.mark.parametrize("arch", DENSE_ARCHES)
def test_f32_logits_match_transformers(arch, reference, converted):
    check(reference, converted, arch, "f32")


@pytest.mark.parametrize("arch", DENSE_ARCHES)
def test_q8_0_agrees_with_transformers(arch, reference, converted):
    check(reference, converted, arch, "q8_0")


@pytest.mark.parametrize(
    ("arch", "out_type"),
    [("llama", "bf16"), ("qwen3", "f16"), ("gemma3", "bf16"), ("qwen2", "f16"), ("qwen3moe", "bf16")],
)
def test_half_precision_loads_and_agrees(arch, out_type, reference, converted):
    check(reference, converted, arch, out_type)


def _tensor_bytes(path: Path) -> dict[str, tuple[int, bytes]]:
    return {t.name: (int(t.tensor_type), bytes(t.data.tobytes())) for t in GGUFReader(path).tensors}


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_q8_0_bytes_equal_llama_cpp_quantizer(arch, converted, tmp_path):
    """Our q8_0 (gguf.quants) is bit for bit what llama.cpp's own quantizer makes from our f32 file."""
    ours = converted(arch, "q8_0")
    theirs = tmp_path / "theirs.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = 7  # LLAMA_FTYPE_MOSTLY_Q8_0
    assert (
        llama_cpp.llama_model_quantize(str(converted(arch, "f32")).encode(), str(theirs).encode(), ctypes.byref(params))
        == 0
    )
    a, b = _tensor_bytes(ours), _tensor_bytes(theirs)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name] == b[name], name


def test_bf16_checkpoint_stays_bf16_by_default(tmp_path):
    """A bf16 checkpoint converts to bf16 without --type, its matrices copied byte for byte."""
    from convert import convert_checkpoint
    from testkit.fixtures.synthetic import write_synthetic

    src = write_synthetic(tmp_path / "syn", hidden=64, layers=1, vocab=300, ff=128)
    out = convert_checkpoint(src, tmp_path / "syn.gguf", progress=False)
    reader = GGUFReader(out)
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == "BF16" and types["blk.0.attn_norm.weight"] == "F32"
    from convert.source import read_tensors

    ref = read_tensors(src)["model.layers.0.self_attn.q_proj.weight"]
    got = next(t for t in reader.tensors if t.name == "blk.0.attn_q.weight")
    assert bytes(got.data.tobytes()) == ref.read().tobytes()
