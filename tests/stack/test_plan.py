"""The VRAM plan: layer placement under several budgets, fixed placements, replicas, and no GPU at all.

Expected layer counts are worked out by hand from round sizes (MiB), not by calling fit_layers again.
"""

from __future__ import annotations

from hypothesis import given, strategies as st

from serve.engine.placement import ModelShape
from stack.plan import ModelNeeds, costs, footprint, plan, plan_stack, split

MiB = 2**20
# 4 layers of 100 MiB, a 50 MiB output head; KV: 128 + 128 wide x 2 bytes (f16) = 512 B a token a layer,
# so 2048 tokens (ctx 1024 x 2 concurrent) take exactly 1 MiB a layer.
SHAPE = ModelShape(n_layers=4, layer_bytes=(100 * MiB,) * 4, output_bytes=50 * MiB, n_embd_k_gqa=128, n_embd_v_gqa=128)
TOTAL = 4 * 100 * MiB + 50 * MiB + 60 * MiB  # layers + head + a 60 MiB token embedding that stays on the CPU


def needs(name: str = "a", **kw: object) -> ModelNeeds:
    return ModelNeeds(name=name, shape=SHAPE, total_bytes=TOTAL, n_ctx=2048, **kw)


def test_budgets_place_layers_until_full() -> None:
    # budget -> layers: each layer costs 101 MiB (weights + KV); the head 50 MiB more; no reserve here.
    cases = {0: 0, 100 * MiB: 0, 101 * MiB: 1, 250 * MiB: 2, 404 * MiB: 4, 453 * MiB: 4, 454 * MiB: 5, 10_000 * MiB: 5}
    for budget, layers in cases.items():
        p = plan([needs()], budget, gpu=True, reserve=0)
        row = p.rows[0]
        assert row.gpu_layers == layers, (budget, row)
        assert row.total_layers == 5
        assert row.vram <= budget
        expected_vram = min(layers, 4) * 101 * MiB + (50 * MiB if layers == 5 else 0)
        assert row.vram == expected_vram


def test_reserve_is_charged_once_per_model_on_the_gpu() -> None:
    p = plan([needs()], 1024 * MiB, gpu=True, reserve=512 * MiB)
    assert p.rows[0].gpu_layers == 5 - 0 and p.rows[0].vram == 454 * MiB + 512 * MiB
    p = plan([needs()], 600 * MiB, gpu=True, reserve=512 * MiB)  # 88 MiB left after the reserve: no layer
    assert p.rows[0].gpu_layers == 0 and p.rows[0].vram == 0


def test_first_model_in_the_file_gets_the_gpu_first() -> None:
    p = plan([needs("a"), needs("b")], 700 * MiB, gpu=True, reserve=0)
    assert [r.gpu_layers for r in p.rows] == [5, 2]  # a: 454 MiB, b: 2 x 101 of the 246 left
    assert sum(r.vram for r in p.rows) <= 700 * MiB
    assert "VRAM budget 700.0 MiB" in p.note


def test_fixed_placements_are_charged_before_auto_ones() -> None:
    p = plan(
        [needs("auto"), needs("fixed", n_gpu_layers=3), needs("cpu", device_map="cpu")], 500 * MiB, gpu=True, reserve=0
    )
    layers = {r.name: r.gpu_layers for r in p.rows}
    assert layers == {"fixed": 3, "auto": 1, "cpu": 0}  # 500 - 303 = 197 MiB: one layer for auto


def test_replicas_each_hold_a_copy() -> None:
    p = plan([needs(replicas=2)], 500 * MiB, gpu=True, reserve=0)  # 250 MiB a replica: 2 layers each
    assert p.rows[0].gpu_layers == 2 and p.rows[0].vram == 2 * 2 * 101 * MiB


def test_kv_cache_grows_with_context_and_concurrency() -> None:
    small = plan([needs()], 404 * MiB, gpu=True, reserve=0).rows[0]
    big = plan([ModelNeeds("a", SHAPE, TOTAL, n_ctx=2048 * 64)], 404 * MiB, gpu=True, reserve=0).rows[0]
    assert small.gpu_layers == 4 and big.gpu_layers == 2  # each layer now takes 100 + 64 MiB


def test_no_gpu_plans_all_cpu_and_says_so() -> None:
    p = plan([needs("a"), needs("b", device_map="gpu")], 10**12, gpu=False)
    assert all(r.gpu_layers == 0 and r.vram == 0 for r in p.rows)
    assert all(r.ram == TOTAL + 4 * MiB for r in p.rows)  # every weight plus the KV of 4 layers
    assert "CPU" in p.note
    text = p.render()
    assert "0/5" in text and "GPU layers" in text and "no GPU" in text


def test_unknown_free_vram_puts_auto_models_fully_on_the_gpu() -> None:
    p = plan([needs("a"), needs("b", device_map="cpu")], None, gpu=True, reserve=0)
    assert [r.gpu_layers for r in p.rows] == [5, 0]
    assert "unknown" in p.note


def test_render_table() -> None:
    text = plan([needs("demo-think")], 250 * MiB, gpu=True, reserve=0).render()
    header, rule, row, note = text.splitlines()
    assert header.split() == ["model", "replicas", "GPU", "layers", "VRAM", "RAM"]
    assert row.split()[:3] == ["demo-think", "1", "2/5"] and "202.0 MiB" in row
    assert set(rule) <= {"-", " "} and "250.0 MiB" in note


@given(st.integers(0, 5), st.integers(64, 1 << 16))
def test_memory_is_conserved(n_gpu: int, n_ctx: int) -> None:
    """Whatever the split, VRAM + RAM hold every weight and every layer's KV cache exactly once."""
    m = ModelNeeds("a", SHAPE, TOTAL, n_ctx=n_ctx)
    vram, ram = split(m, n_gpu, reserve=0)
    kv_all = 4 * 512 * n_ctx
    assert vram + ram == TOTAL + kv_all


@given(st.integers(0, 5), st.integers(1, 64))
def test_the_projector_is_charged_where_it_runs(n_gpu: int, projector_mib: int) -> None:
    """serve runs the image projector on the GPU when any layer is there (Projector's use_gpu), else on the CPU."""
    vram, ram = split(needs(projector=projector_mib * MiB), n_gpu, reserve=0)
    base_vram, base_ram = split(needs(), n_gpu, reserve=0)
    on_gpu = projector_mib * MiB if n_gpu > 0 else 0
    assert (vram, ram) == (base_vram + on_gpu, base_ram + projector_mib * MiB - on_gpu)


def test_the_projector_takes_its_room_from_the_layers() -> None:
    # 30 MiB of projector: 404 MiB held 4 layers without it, 3 with it; 101 MiB holds no layer and the projector stays
    # on the CPU.
    assert plan([needs(projector=30 * MiB)], 404 * MiB, gpu=True, reserve=0).rows[0].gpu_layers == 3
    assert plan([needs(projector=30 * MiB)], 434 * MiB, gpu=True, reserve=0).rows[0].gpu_layers == 4
    row = plan([needs(projector=30 * MiB)], 101 * MiB, gpu=True, reserve=0).rows[0]
    assert (row.gpu_layers, row.vram) == (0, 0)
    assert row.ram == split(needs(), 0, 0)[1] + 30 * MiB
    assert all(r.vram <= 404 * MiB for r in plan([needs(projector=30 * MiB)], 404 * MiB, gpu=True, reserve=0).rows)


# -- on demand: every placement's cost, and the start-up plan ---------------------------------------------------


def test_costs_list_every_placement_with_what_it_holds() -> None:
    """Most GPU layers first; the host pays the compute buffer unless every layer is on the GPU, and the process."""
    m = needs(host_compute=30 * MiB, process=80 * MiB)
    options = costs(m, reserve=0, gpu=True)
    assert [c.layers for c in options] == [5, 4, 3, 2, 1, 0]
    by_layers = {c.layers: (c.vram // MiB, c.ram // MiB) for c in options}
    assert by_layers[5] == (454, 60 + 80)  # the token embedding and the process stay on the host
    assert by_layers[2] == (202, 510 - 200 + 2 + 30 + 80)  # two layers' weights and KV moved to the GPU
    assert by_layers[0] == (0, 510 + 4 + 30 + 80)
    twice = costs(needs(host_compute=30 * MiB, process=80 * MiB, replicas=2), reserve=0, gpu=True)
    assert [(c.vram, c.ram) for c in twice] == [(2 * c.vram, 2 * c.ram) for c in options]


def test_costs_of_fixed_placements_and_without_a_gpu() -> None:
    assert [c.layers for c in costs(needs(n_gpu_layers=3), 0, gpu=True)] == [3]
    assert [c.layers for c in costs(needs(device_map="cpu"), 0, gpu=True)] == [0]
    assert [c.layers for c in costs(needs(device_map="gpu"), 0, gpu=True)] == [5]
    assert [(c.layers, c.vram) for c in costs(needs(device_map="gpu"), 0, gpu=False)] == [(0, 0)]


@given(st.integers(0, 5), st.integers(0, 64), st.integers(0, 256))
def test_footprint_adds_the_host_extras_to_the_split(n_gpu: int, compute_mib: int, process_mib: int) -> None:
    m = needs(host_compute=compute_mib * MiB, process=process_mib * MiB)
    vram, ram = footprint(m, n_gpu, reserve=0)
    base_vram, base_ram = split(m, n_gpu, reserve=0)
    assert vram == base_vram
    assert ram == base_ram + process_mib * MiB + (compute_mib * MiB if n_gpu <= 4 else 0)


def test_start_up_plan_places_preloads_together_and_the_rest_alone() -> None:
    p = plan_stack([needs("a"), needs("b"), needs("c")], {"a", "b"}, 700 * MiB, None, gpu=True, reserve=0)
    assert [r.gpu_layers for r in p.rows] == [5, 2, 5]  # c loads later, beside whatever is loaded then
    assert "loaded at their first request: c" in p.note
    p = plan_stack([needs("a"), needs("b")], {"a"}, None, 100 * MiB, gpu=False, reserve=0)
    assert "RAM budget 100.0 MiB" in p.note and "b (too large for the budget)" in p.note  # 514 MiB on the CPU
    assert "a is not loaded at start" in p.note
    p = plan_stack([needs("a"), needs("b")], {"a", "b"}, None, 600 * MiB, gpu=False, reserve=0)
    assert "b is not loaded at start" in p.note and "RAM budget 600.0 MiB: 514.0 MiB loaded at start" in p.note
    p = plan_stack([needs("a")], set(), None, None, gpu=False, reserve=0)
    assert "no model is loaded at start" in p.note and p.rows[0].name == "a"
