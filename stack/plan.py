"""Low-VRAM planning: which layers of which model go on the GPU under one memory budget (pure arithmetic).

Each model needs its weights per layer plus KV cache for ctx_size x max_concurrent tokens in every offloaded layer
(serve/engine/placement.py's kv_bytes_per_token and fit_layers do the per-model part). Models with a fixed placement
(n_gpu_layers, device_map cpu/gpu) are charged first; the `auto` ones then take what is left in stack-file order,
so the first model listed gets the GPU first. Layer counts use llama.cpp's convention: n_layers + 1 means every
layer and the output head.

On demand (route/residency.py decides at run time), each model also gets its cost table (`costs`): every placement
it may take, most GPU layers first, each with the VRAM and RAM it then holds. The RAM side counts what a running
server really takes beyond its weights and KV cache: llama.cpp's compute buffer when the model is not wholly on the
GPU (`compute_bytes`; the GPU's is the reserve) and the server process itself (PROCESS_BYTES). The start-up plan
(`plan_stack`) places the preloaded models together as `plan` does and the others as if alone, since they load
later beside whatever is loaded then.

An image projector (serve loads NAME.mmproj.gguf beside the model) runs where the model's layers do: on the GPU
when any layer is offloaded (serve's Projector use_gpu), else on the CPU. Its weights and its vision tower's compute
buffer (`projector_compute_bytes`) are charged on that side.
"""

from __future__ import annotations

from dataclasses import dataclass

from hearth_common.units import human
from route.residency import Budget, Cost
from serve.engine.placement import ModelShape, fit_layers, kv_bytes_per_token

# RSS of a `python -m serve` process around a 1 MB model, its buffers included: 86-88 MiB measured (Python, Quart,
# uvicorn, llama.cpp; hypercorn the same). Charged once per server on top of the model's own bytes.
PROCESS_BYTES = 96 * 2**20


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
    host_compute: int = 0  # llama.cpp's compute buffer in RAM when not every layer is on the GPU
    process: int = 0  # the server process itself
    projector: int = 0  # the image projector's weights and compute buffer, beside the first offloaded layer


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
            (r.name, str(r.replicas), f"{r.gpu_layers}/{r.total_layers}", human(r.vram), human(r.ram))
            for r in self.rows
        ]
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        text = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines]
        text.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join([*text, self.note])


def split(needs: ModelNeeds, n_gpu: int, reserve: int) -> tuple[int, int]:
    """(VRAM, RAM) in bytes for one replica with `n_gpu` layers offloaded."""
    shape = needs.shape
    layers = min(n_gpu, shape.n_layers)
    kv_layer = kv_bytes_per_token(shape, needs.kv_type) * needs.n_ctx
    weights = sum(shape.layer_bytes[:layers])
    output = shape.output_bytes if n_gpu > shape.n_layers else 0
    vram = weights + output + layers * kv_layer + (reserve + needs.projector if n_gpu > 0 else 0)
    # The output head moves off the host when offloaded; with tied embeddings its GPU copy is extra, hence the floor.
    ram = max(needs.total_bytes - weights - output, 0) + (shape.n_layers - layers) * kv_layer
    ram += needs.projector if n_gpu <= 0 else 0
    return int(vram), int(ram)


def footprint(needs: ModelNeeds, n_gpu: int, reserve: int) -> tuple[int, int]:
    """(VRAM, RAM) one replica really holds: split's weights and KV plus the compute buffer and the process."""
    vram, ram = split(needs, n_gpu, reserve)
    on_host = needs.host_compute if n_gpu <= needs.shape.n_layers else 0
    return vram, ram + on_host + needs.process


def compute_bytes(n_ubatch: int, n_vocab: int, n_head: int, n_ff: int, ctx_per_seq: int) -> int:
    """llama.cpp's compute buffer, estimated. Its graph allocator reuses memory, so the peak is the larger of two
    phases, the float32 logits of a whole micro-batch or its attention scores over one sequence's context (with the
    softmax beside them), plus the feed-forward activations. Against llama.cpp's own report ("compute buffer size")
    for serve's contexts: 0.94-1.3x on the demo models (tests/stack/test_footprint.py), 1.1x on a 151,936-token
    330M model whose logits dominate."""
    return int(4 * n_ubatch * (max(n_vocab, 1.5 * n_head * ctx_per_seq) + 4 * n_ff))


def projector_compute_bytes(image_size: int, patch_size: int, n_head: int, n_ff: int) -> int:
    """The vision tower's compute buffer, estimated: the float32 image, then per layer the attention scores of every
    patch against every patch and the feed-forward activations. Against llama.cpp's report (clip's "compute buffer
    size", flash attention off): 0.98x on demo-vision's tiny tower, 1.07x on bench/vision.py's 1,024-patch one."""
    n_patches = (image_size // max(patch_size, 1)) ** 2
    return int(4 * (3 * image_size**2 + n_patches * (n_head * n_patches + 1.5 * n_ff)))


def costs(needs: ModelNeeds, reserve: int, gpu: bool) -> list[Cost]:
    """Every placement the model may take, most GPU layers first, at its whole size (all replicas)."""
    fixed = _fixed(needs)
    if not gpu:
        layers = [0]
    elif fixed is not None:
        layers = [fixed]
    else:
        layers = list(range(needs.shape.n_layers + 1, -1, -1))
    out = []
    for n in layers:
        vram, ram = footprint(needs, n, reserve)
        out.append(Cost(n, vram * needs.replicas, ram * needs.replicas))
    return out


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
        # fit_layers subtracts the reserve itself; a model that gets no layer keeps no compute buffer (nor its
        # projector) there either.
        room = left // m.replicas - m.projector
        n = max(fit_layers(m.shape, room, m.n_ctx, m.kv_type, reserve), 0) if room > 0 else 0
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
    vram, ram = footprint(m, n_gpu, reserve)
    return PlanRow(m.name, m.replicas, n_gpu, m.shape.n_layers + 1, vram * m.replicas, ram * m.replicas)


def plan_stack(
    models: list[ModelNeeds],
    preload: set[str],
    budget: int | None,
    ram_budget: int | None,
    gpu: bool,
    reserve: int = 512 * 2**20,
) -> Plan:
    """The start-up plan: the preloaded models placed together by `plan`, the others at their best placement alone
    (they load on demand beside whatever is loaded then), and a note on what is loaded when."""
    loaded = plan([m for m in models if m.name in preload], budget, gpu, reserve)
    limit = Budget(budget, ram_budget)
    rows = {r.name: r for r in loaded.rows}
    later = []
    for m in models:
        if m.name in rows:
            continue
        options = costs(m, reserve, gpu)
        best = next((c for c in options if limit.holds(c.vram, c.ram)), options[-1])
        rows[m.name] = _row(m, best.layers, reserve)
        later.append(m.name if limit.holds(best.vram, best.ram) else f"{m.name} (too large for the budget)")
    notes = [loaded.note]
    vram = ram = 0
    for row in loaded.rows:  # in the file's order, as the router preloads them: nothing is evicted for a preload
        if limit.holds(vram + row.vram, ram + row.ram):
            vram, ram = vram + row.vram, ram + row.ram
        else:
            notes.append(f"{row.name} is not loaded at start: it does not fit the budget beside the models before it")
    if not vram and not ram:
        notes.append("no model is loaded at start")
    if ram_budget is not None:
        notes.append(f"RAM budget {human(ram_budget)}" + (f": {human(ram)} loaded at start" if ram else ""))
    if later:
        notes.append("loaded at their first request: " + ", ".join(later))
    return Plan(tuple(rows[m.name] for m in models), "\n".join(notes), budget)
