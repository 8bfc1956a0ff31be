"""How many layers fit in free VRAM: pure arithmetic, since llama.cpp's wheel ships no fitting call.

Inputs are measured elsewhere (tensor sizes from the GGUF, free VRAM from the driver); nothing here touches a
device, so CI without a GPU tests it all.
"""

from __future__ import annotations

from dataclasses import dataclass

KV_TYPE_BYTES = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}  # bytes per element, ggml block sizes
DEVICE_MAPS = ("auto", "cpu", "gpu")


@dataclass(frozen=True)
class ModelShape:
    n_layers: int
    layer_bytes: tuple[int, ...]  # weight bytes of each repeating block, in order
    output_bytes: int  # output head + final norm (offloaded together with the last layer's step)
    n_embd_k_gqa: int  # per-layer key width (head_dim * n_kv_heads)
    n_embd_v_gqa: int


@dataclass(frozen=True)
class Placement:
    n_gpu_layers: int
    reason: str


def kv_bytes_per_token(shape: ModelShape, kv_type: str) -> float:
    """Bytes of K and V cache one token takes in one layer."""
    return (shape.n_embd_k_gqa + shape.n_embd_v_gqa) * KV_TYPE_BYTES[kv_type]


def fit_layers(
    shape: ModelShape,
    free_vram: int,
    n_ctx: int,
    kv_type: str = "f16",
    reserve: int = 512 * 2**20,
) -> int:
    """Largest number of layers whose weights and KV cache fit in `free_vram` minus a compute reserve.

    Returns n_layers + 1 when everything including the output head fits (llama.cpp's "all layers" count).
    """
    budget = free_vram - reserve
    kv_layer = kv_bytes_per_token(shape, kv_type) * n_ctx
    used = 0.0
    fitted = 0
    for size in shape.layer_bytes:
        if used + size + kv_layer > budget:
            return fitted
        used += size + kv_layer
        fitted += 1
    return fitted + 1 if used + shape.output_bytes <= budget else fitted


def resolve(
    device_map: str,
    n_gpu_layers: int | None,
    gpu_available: bool,
    shape: ModelShape | None,
    free_vram: int | None,
    n_ctx: int,
    kv_type: str,
) -> Placement:
    """The layer count to pass to llama.cpp and a log line saying why."""
    if device_map not in DEVICE_MAPS:
        raise ValueError(f"device_map must be one of {', '.join(DEVICE_MAPS)}, not {device_map!r}")
    if not gpu_available:
        return Placement(0, "no GPU backend in this llama.cpp build: running on the CPU")
    if n_gpu_layers is not None:
        return Placement(n_gpu_layers, f"--n-gpu-layers {n_gpu_layers}")
    if device_map == "cpu":
        return Placement(0, "--device-map cpu")
    if device_map == "gpu" or shape is None or free_vram is None:
        return Placement(999, "--device-map gpu: every layer on the GPU")
    n = fit_layers(shape, free_vram, n_ctx, kv_type)
    return Placement(
        n, f"--device-map auto: {n} of {shape.n_layers + 1} layers fit in {free_vram / 2**30:.1f} GiB free"
    )


# -- measuring the inputs (I/O kept apart from the arithmetic above) ------------------------------------------


def read_shape(path: str) -> ModelShape:
    """Per-layer weight bytes and KV widths from a GGUF's tensor table (memory-mapped, no weights read)."""
    import re

    import gguf

    reader = gguf.GGUFReader(path)
    arch = str(bytes(reader.fields["general.architecture"].parts[-1]), "utf-8")

    def field(key: str) -> int | None:
        f = reader.fields.get(f"{arch}.{key}")
        return int(f.parts[-1][0]) if f is not None else None

    n_layers = field("block_count") or 0
    layer = [0] * n_layers
    other = 0
    for t in reader.tensors:
        m = re.match(r"blk\.(\d+)\.", t.name)
        if m and int(m.group(1)) < n_layers:
            layer[int(m.group(1))] += int(t.n_bytes)
        elif not t.name.startswith("token_embd"):  # the input embedding stays on the CPU in llama.cpp
            other += int(t.n_bytes)
    n_head = field("attention.head_count") or 1
    n_kv = field("attention.head_count_kv") or n_head
    n_embd = field("embedding_length") or 0
    k_len = field("attention.key_length") or n_embd // n_head
    v_len = field("attention.value_length") or n_embd // n_head
    return ModelShape(n_layers, tuple(layer), other, k_len * n_kv, v_len * n_kv)


def free_vram() -> int | None:
    """Free bytes on the first GPU as the driver reports them, or None without nvidia-smi."""
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.free", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        return int(out.splitlines()[0].strip()) * 2**20
    except (subprocess.SubprocessError, ValueError, IndexError, OSError):
        return None
