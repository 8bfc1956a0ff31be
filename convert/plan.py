"""What goes into the GGUF: every output tensor's name, shape, type and a producer of its bytes.

Planning is pure (no tensor data is read): names are mapped, shapes checked against config.json, and every
tensor gets a generator that yields its output bytes block by block when the writer asks for them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, MODEL_TENSOR, TENSOR_NAMES, GGMLQuantizationType, TensorNameMap, quants

from convert.arch import Arch, Config, OutTensor, Plan, Transform
from convert.errors import ShapeError, UnsupportedError
from convert.source import Checkpoint, TensorRef, to_f32

Q = GGMLQuantizationType

# --type names written directly -> the GGML type of 2-D weights
DIRECT_TYPES: dict[str, Q] = {"f32": Q.F32, "f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0}
# safetensors dtype -> the GGML type that holds it byte for byte
SAME_BYTES: dict[str, Q] = {"F32": Q.F32, "F16": Q.F16, "BF16": Q.BF16}
# Rows per block are chosen so one converted block stays near this many float32 bytes.
TRANSFORM_BLOCK_BYTES = 8 * 1024 * 1024


def nbytes_of(shape: tuple[int, ...], qtype: Q) -> int:
    block, size = GGML_QUANT_SIZES[qtype]
    return math.prod(shape) // block * size


def weight_type(shape: tuple[int, ...], out_type: str) -> Q:
    """The GGML type for a tensor: vectors stay f32 (llama.cpp expects that), matrices take --type."""
    if len(shape) < 2:
        return Q.F32
    qtype = DIRECT_TYPES[out_type]
    block, _ = GGML_QUANT_SIZES[qtype]
    if shape[-1] % block:
        return Q.F16  # rows that do not fill whole quant blocks; llama.cpp's converter falls back the same way
    return qtype


def encode(x: np.ndarray, qtype: Q) -> np.ndarray:
    """float32 rows -> the bytes of `qtype`."""
    if qtype == Q.F32:
        return x.astype(np.float32, copy=False)
    if qtype == Q.F16:
        return x.astype(np.float16)
    return quants.quantize(x, qtype)


def out_tensor(name: str, ref: TensorRef, qtype: Q, transform: Transform | None, config: Config) -> OutTensor:
    """One tensor of the output: read from `ref`, transformed, written as `qtype` (bytes copied as they are when
    nothing changes them). Shared by the text GGUF's plan and the projector's (convert/mmproj.py)."""
    return OutTensor(
        name=name,
        shape=ref.shape,
        ggml_type=qtype,
        nbytes=nbytes_of(ref.shape, qtype),
        produce=producer(ref, qtype, transform, config),
        sources=(ref,) if transform is None and SAME_BYTES[ref.dtype] == qtype else (),
    )


def producer(
    ref: TensorRef, qtype: Q, transform: Transform | None, config: Config
) -> Callable[[], Iterator[np.ndarray]]:
    def produce() -> Iterator[np.ndarray]:
        if transform is None and SAME_BYTES.get(ref.dtype) == qtype:
            yield from ref.blocks()
            return
        align = transform.align(config) if transform else 1
        for block in ref.blocks(align=align, block_bytes=TRANSFORM_BLOCK_BYTES // 4 * ref.np_dtype.itemsize):
            x = to_f32(block, ref.dtype)
            if transform is not None:
                x = transform.fn(x, config)
            yield encode(x, qtype)

    return produce


def normalize_name(arch: Arch, name: str) -> str | None:
    """HF name -> the name the TensorNameMap knows, or None for tensors outside the text model."""
    for old, new in arch.rename:
        if name.startswith(old):
            name = new + name[len(old) :]
            break
    if name.startswith(arch.skip_prefixes) or name.endswith(arch.skip_suffixes):
        return None
    return name


def check_shape(arch: Arch, config: Config, kind: Any, hf_name: str, ref: TensorRef) -> None:
    expect_fn = arch.shapes.get(kind)
    if expect_fn is None:
        return
    expect = tuple(int(d) for d in expect_fn(config))
    if hf_name.endswith(".bias"):
        expect = expect[:1]
    if ref.shape != expect:
        raise ShapeError(f"tensor {ref.name} has shape {list(ref.shape)} but config.json implies {list(expect)}")


def default_plan(arch: Arch, ckpt: Checkpoint, config: Config, out_type: str) -> Plan:
    n_blocks = int(config["num_hidden_layers"])
    names = TensorNameMap(arch.gguf_arch, n_blocks)
    tensors: list[OutTensor] = []
    unmapped: list[str] = []
    for hf_name, ref in ckpt.tensors.items():
        norm = normalize_name(arch, hf_name)
        if norm is None:
            continue
        found = names.get_type_and_name(norm, try_suffixes=(".weight", ".bias"))
        if found is None:
            unmapped.append(hf_name)
            continue
        kind, gguf_name = found
        check_shape(arch, config, kind, norm, ref)
        if ref.dtype not in SAME_BYTES:
            raise UnsupportedError(f"tensor {hf_name} has dtype {ref.dtype}; {arch.name} weights must be F32/F16/BF16")
        qtype = Q.F32 if kind in arch.f32_tensors else weight_type(ref.shape, out_type)
        tensors.append(out_tensor(gguf_name, ref, qtype, arch.transforms.get(kind), config))
    if unmapped:
        raise ShapeError(f"{len(unmapped)} tensors have no GGUF name for {arch.name}: {', '.join(sorted(unmapped))}")
    check_complete(arch, n_blocks, {t.name for t in tensors})
    tensors.sort(key=lambda t: _order(t.name))
    meta = [(arch.key(m.key), v, m.vtype) for m in arch.meta if (v := m.value(config)) is not None]
    return Plan(arch, config, tensors, meta)


def check_complete(arch: Arch, n_blocks: int, have: set[str]) -> None:
    wanted = [TENSOR_NAMES[MODEL_TENSOR.TOKEN_EMBD] + ".weight"]
    wanted += [TENSOR_NAMES[t].format(bid=b) + ".weight" for b in range(n_blocks) for t in arch.required]
    if missing := [w for w in wanted if w not in have]:
        raise ShapeError(f"{len(missing)} tensors are missing for {arch.name}: {', '.join(missing[:8])}")


def _order(name: str) -> tuple[int, int, str]:
    """token_embd first, then blocks in order, then the output head (llama.cpp's own order)."""
    if name.startswith("blk."):
        return (1, int(name.split(".")[1]), name)
    return (0 if name.startswith("token_embd") else 2, 0, name)
