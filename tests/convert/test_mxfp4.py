"""MXFP4 packing against two independent oracles: transformers' dequantizer and gguf-py's quantizer."""

from __future__ import annotations

import numpy as np
import pytest

from convert.mxfp4 import FP4_VALUES, hf_to_ggml_blocks, pack_mxfp4, unpack_mxfp4

torch = pytest.importorskip("torch")
hf_mxfp4 = pytest.importorskip("transformers.integrations.mxfp4")
gguf = pytest.importorskip("gguf")


def _weights(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # a spread of magnitudes per block, some exact grid points, zeros and a whole zero block
    w = rng.standard_normal(shape).astype(np.float32) * np.exp2(rng.integers(-6, 4, size=(*shape[:-1], 1)))
    w[..., :3] = 0.0
    w[(0,) * (len(shape) - 1)][:32] = 0.0
    return w


def test_unpack_matches_transformers_dequantizer() -> None:
    w = _weights((3, 8, 96))  # [E, out, in], like gate_up_proj_blocks before the last reshape
    blocks, scales = pack_mxfp4(w)
    assert blocks.shape == (3, 8, 3, 16) and blocks.dtype == np.uint8
    assert scales.shape == (3, 8, 3) and scales.dtype == np.uint8
    oracle = hf_mxfp4.convert_moe_packed_tensors(
        torch.from_numpy(blocks), torch.from_numpy(scales), dtype=torch.float32
    )
    # transformers hands back the parameter layout [E, in, out]
    np.testing.assert_array_equal(unpack_mxfp4(blocks, scales), oracle.transpose(1, 2).numpy())


def test_random_bytes_unpack_like_transformers() -> None:
    rng = np.random.default_rng(1)
    blocks = rng.integers(0, 256, size=(2, 4, 2, 16), dtype=np.uint8)
    scales = rng.integers(110, 140, size=(2, 4, 2), dtype=np.uint8)
    oracle = hf_mxfp4.convert_moe_packed_tensors(
        torch.from_numpy(blocks), torch.from_numpy(scales), dtype=torch.float32
    )
    np.testing.assert_array_equal(unpack_mxfp4(blocks, scales), oracle.transpose(1, 2).numpy())


def test_pack_rounds_like_gguf_quantizer_and_ggml_layout_decodes() -> None:
    w = _weights((5, 128), seed=2)
    blocks, scales = pack_mxfp4(w)
    ggml = hf_to_ggml_blocks(blocks, scales)
    ref = gguf.quants.quantize(w, gguf.GGMLQuantizationType.MXFP4)
    np.testing.assert_array_equal(ggml.reshape(ref.shape), ref)
    decoded = gguf.quants.dequantize(ggml.reshape(ref.shape), gguf.GGMLQuantizationType.MXFP4)
    np.testing.assert_array_equal(decoded, unpack_mxfp4(blocks, scales))


def test_round_trip_is_exact_on_grid_and_a_projection() -> None:
    rng = np.random.default_rng(3)
    exps = rng.integers(-10, 10, size=(4, 2, 1))
    grid = FP4_VALUES[rng.integers(0, 16, size=(4, 2, 32))]
    grid[..., 0] = 4.0  # block max 4 * 2**e pins the scale exactly
    w = np.ldexp(grid, exps).reshape(4, 64)
    np.testing.assert_array_equal(unpack_mxfp4(*pack_mxfp4(w)), w)
    once = unpack_mxfp4(*pack_mxfp4(_weights((4, 64), seed=4)))
    np.testing.assert_array_equal(unpack_mxfp4(*pack_mxfp4(once)), once)


def test_error_is_bounded_by_the_grid_step() -> None:
    w = _weights((16, 256), seed=5)
    q = unpack_mxfp4(*pack_mxfp4(w))
    amax = np.abs(w.reshape(16, 8, 32)).max(axis=-1, keepdims=True)
    scale = np.exp2(np.floor(np.log2(np.where(amax > 0, amax, 1))) - 2)
    err = np.abs(q - w).reshape(16, 8, 32)
    # inside [0, 6]: half the widest gap (4 -> 6) is one scale; the clip of the block max from <8 to 6: two
    assert (err <= scale + 1e-12)[np.abs(w.reshape(16, 8, 32)) <= 6 * scale].all()
    assert (err <= 2 * scale).all()
    assert err.max() > 0


@pytest.mark.parametrize("shape", [(4, 31), (4, 0, 33)])
def test_bad_shapes_are_refused(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        pack_mxfp4(np.zeros(shape, dtype=np.float32))


def test_mismatched_blocks_and_scales_are_refused() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        unpack_mxfp4(np.zeros((2, 3, 16), np.uint8), np.zeros((2, 2), np.uint8))
