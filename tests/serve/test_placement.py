"""Layer fitting arithmetic (CI has no GPU, so the numbers are the test)."""

from __future__ import annotations

import pytest

from serve.engine.placement import ModelShape, fit_layers, kv_bytes_per_token, resolve

MiB = 2**20
SHAPE = ModelShape(n_layers=4, layer_bytes=(100 * MiB,) * 4, output_bytes=50 * MiB, n_embd_k_gqa=512, n_embd_v_gqa=512)


def test_kv_bytes() -> None:
    assert kv_bytes_per_token(SHAPE, "f16") == 2048
    assert kv_bytes_per_token(SHAPE, "q8_0") == 1024 * 34 / 32


@pytest.mark.parametrize(
    ("free_mib", "expected"),
    [(0, 0), (512 + 99, 0), (512 + 100 + 4, 1), (512 + 400 + 16 - 1, 3), (512 + 416, 4), (512 + 416 + 50, 5)],
)
def test_fit_layers(free_mib: int, expected: int) -> None:
    # 2048 tokens * 2048 bytes = 4 MiB of KV per layer, 512 MiB compute reserve
    assert fit_layers(SHAPE, free_mib * MiB, n_ctx=2048) == expected


def test_smaller_kv_type_fits_more() -> None:
    free = (512 + 300) * MiB
    assert fit_layers(SHAPE, free, n_ctx=200_000, kv_type="q4_0") > fit_layers(SHAPE, free, n_ctx=200_000)


def test_resolve() -> None:
    args = dict(shape=SHAPE, free_vram=2**30, n_ctx=2048, kv_type="f16")
    assert resolve("auto", None, gpu_available=False, **args).n_gpu_layers == 0
    assert "CPU" in resolve("gpu", None, gpu_available=False, **args).reason
    assert resolve("cpu", None, gpu_available=True, **args).n_gpu_layers == 0
    assert resolve("gpu", None, gpu_available=True, **args).n_gpu_layers == 999
    assert resolve("auto", None, gpu_available=True, **args).n_gpu_layers == 5
    assert resolve("auto", 2, gpu_available=True, **args).n_gpu_layers == 2
    with pytest.raises(ValueError, match="device_map"):
        resolve("tpu", None, gpu_available=True, **args)


def test_read_shape_from_a_real_gguf() -> None:
    from serve.engine.placement import read_shape
    from testkit.tiny_gguf import build_tiny_gguf

    shape = read_shape(str(build_tiny_gguf()))
    # tiny: 2 layers of 4 attention (64x64) + 3 ffn (64x128) f32 matrices + 2 norms; head 261x64 + norm
    per_layer = (4 * 64 * 64 + 3 * 64 * 128 + 2 * 64) * 4
    assert shape.n_layers == 2 and shape.layer_bytes == (per_layer, per_layer)
    assert shape.output_bytes == (261 * 64 + 64) * 4
    assert shape.n_embd_k_gqa == shape.n_embd_v_gqa == 64
