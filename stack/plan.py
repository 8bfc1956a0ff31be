"""Low-VRAM planning: which layers of which model go on the GPU under one memory budget (pure arithmetic).

Each model needs its weights per layer plus KV cache for ctx_size x max_concurrent tokens in every offloaded layer
(serve/placement.py's kv_bytes_per_token and fit_layers do the per-model part). Models with a fixed placement
(n_gpu_layers, device_map cpu/gpu) are charged first; the `auto` ones then take what is left in stack-file order,
so the first model listed gets the GPU first. Layer counts use llama.cpp's convention: n_layers + 1 means every
layer and the output head.
"""

from __future__ import annotations

from dataclasses import dataclass

from serve.placement import ModelShape, fit_layers, kv_bytes_per_token


@dataclass(frozen=True)
class ModelNeeds:
    name: str
    shape: ModelShape
    total_bytes: int  # every tensor in the GGUF
    n_ctx: int  # KV tokens the server allocates: ctx_size x max_concurrent
    kv_type: str = "f16"
    replicas: int = 1
    device_map: str = "auto"  # auto, cpu, gpu
    n_gpu_layers: int | None = None  # fixed by the stack file; overrides device_map


@dataclass(frozen=True)
class PlanRow:
    name: str
    replicas: int
    gpu_layers: int  # what --n-gpu-layers gets
    total_layers: int  # n_layers + 1 (the output head counts as one)
    vram: int  # bytes on the GPU, all replicas together
    ram: int  # bytes in host memory, all replicas together


@dataclass(frozen=True)
class Plan:
    rows: tuple[PlanRow, ...]
    note: str
    budget: int | None

    def layers(self, name: str) -> int:
        return next(r.gpu_layers for r in self.rows if r.name == name)

    def render(self) -> str:
        header = ("model", "replicas", "GPU layers", "VRAM", "RAM")
        lines = [header] + [
            (r.name, str(r.replicas), f"{r.gpu_layers}/{r.total_layers}", human(r.vram), human(r.ram)) for r in self.rows
        ]
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        text = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines]
        text.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join([*text, self.note])


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def split(needs: ModelNeeds, n_gpu: int, reserve: int) -> tuple[int, int]:
    """(VRAM, RAM) in bytes for one replica with `n_gpu` layers offloaded."""
    shape = needs.shape
    layers = min(n_gpu, shape.n_layers)
    kv_layer = kv_bytes_per_token(shape, needs.kv_type) * needs.n_ctx
    weights = sum(shape.layer_bytes[:layers])
    output = shape.output_bytes if n_gpu > shape.n_layers else 0
    vram = weights + output + layers * kv_layer + (reserve if n_gpu > 0 else 0)
    # The output head moves off the host when offloaded; with tied embeddings its GPU copy is extra, hence the floor.
    ram = max(needs.total_bytes - weights - output, 0) + (shape.n_layers - layers) * kv_layer
    return int(vram), int(ram)


def _fixed(needs: ModelNeeds) -> int | None:
    if needs.n_gpu_layers is not None:
        return min(needs.n_gpu_layers, needs.shape.n_layers + 1)
    return {"cpu": 0, "gpu": needs.shape.n_layers + 1}.get(needs.device_map)


def plan(models: list[ModelNeeds], budget: int | None, gpu: bool, reserve: int = 512 * 2**20) -> Plan:
    """Place layers under `budget` bytes of VRAM. gpu=False: all on the CPU. budget=None with a GPU: VRAM unknown,
    so `auto` models go fully on the GPU, as serve's --device-map gpu does."""
    if not gpu:
        rows = tuple(_row(m, 0, reserve) for m in models)
        return Plan(rows, "no GPU offload in this llama.cpp build: every layer runs on the CPU", None)
    chosen: dict[str, int] = {}
    left = budget
    for m in models:
        fixed = _fixed(m)
        if fixed is not None:
            chosen[m.name] = fixed
            if left is not None:
                left -= split(m, fixed, reserve)[0] * m.replicas
    for m in models:
        if m.name in chosen:
            continue
        if left is None:
            chosen[m.name] = m.shape.n_layers + 1
            continue
        # fit_layers subtracts the reserve itself; a model that gets no layer keeps no compute buffer either.
        n = max(fit_layers(m.shape, left // m.replicas, m.n_ctx, m.kv_type, reserve), 0) if left > 0 else 0
        chosen[m.name] = n
        left -= split(m, n, reserve)[0] * m.replicas
    rows = tuple(_row(m, chosen[m.name], reserve) for m in models)
    used = sum(r.vram for r in rows)
    if budget is None:
        note = "free VRAM unknown: every layer of the auto models on the GPU"
    else:
        over = " (over budget: fixed placements exceed it)" if used > budget else ""
        note = f"VRAM budget {human(budget)}: {human(used)} planned{over}"
    return Plan(rows, note, budget)


def _row(m: ModelNeeds, n_gpu: int, reserve: int) -> PlanRow:
    vram, ram = split(m, n_gpu, reserve)
    return PlanRow(m.name, m.replicas, n_gpu, m.shape.n_layers + 1, vram * m.replicas, ram * m.replicas)
