"""The on-demand planner alone: what fits, what is evicted (least recently used idle models first), when a request
must wait, and when a model is too large for the budget. Sizes are round MiB figures worked out by hand."""

from __future__ import annotations

from hypothesis import given, strategies as st

from route.residency import Budget, Cost, Holder, Load, TooLarge, Wait, decide

MiB = 2**20


def cpu(ram_mib: int) -> Cost:
    return Cost(0, 0, ram_mib * MiB)


def held(name: str, ram_mib: int, last_used: float, busy: str | None = None) -> Holder:
    return Holder(name, cpu(ram_mib), last_used, busy)


RAM300 = Budget(ram=300 * MiB)


def test_fits_beside_the_loaded_ones() -> None:
    assert decide("b", [cpu(100)], [held("a", 100, 1)], RAM300) == Load(cpu(100))
    assert decide("c", [cpu(100)], [held("a", 100, 1), held("b", 100, 2)], RAM300) == Load(cpu(100))


def test_least_recently_used_idle_model_goes_first() -> None:
    holders = [held("a", 100, 3), held("b", 100, 1), held("c", 100, 2)]
    assert decide("d", [cpu(100)], holders, RAM300) == Load(cpu(100), ("b",))
    assert decide("d", [cpu(200)], holders, RAM300) == Load(cpu(200), ("b", "c"))


def test_busy_and_pinned_models_are_never_evicted() -> None:
    holders = [held("a", 100, 1, "1 request in flight"), held("p", 100, 0, "pinned"), held("b", 100, 5)]
    assert decide("d", [cpu(100)], holders, RAM300) == Load(cpu(100), ("b",))
    holders = [held("a", 100, 1, "2 requests waiting"), held("l", 100, 2, "loading"), held("b", 100, 5)]
    assert decide("d", [cpu(200)], holders, RAM300) == Wait(
        "model 'd' needs 200.0 MiB of RAM; the budget RAM 300.0 MiB is held by a (2 requests waiting), "
        "l (loading), b (idle)"
    )


def test_a_victim_the_room_does_not_need_is_kept() -> None:
    # 250 used, 200 wanted: the least recently used (a, 50) is not enough, b (200) is; then a is not needed.
    holders = [held("a", 50, 1), held("b", 200, 2)]
    assert decide("c", [cpu(200)], holders, RAM300) == Load(cpu(200), ("b",))


def test_waits_while_busy_models_hold_the_room() -> None:
    decision = decide("b", [cpu(200)], [held("a", 200, 1, "1 request in flight")], RAM300)
    assert isinstance(decision, Wait) and "a (1 request in flight)" in decision.reason


def test_too_large_names_its_size_and_the_budget() -> None:
    decision = decide("big", [cpu(400)], [], RAM300)
    assert decision == TooLarge(
        "model 'big' needs 400.0 MiB of RAM when loaded, more than the budget RAM 300.0 MiB "
        "allows even with no other model loaded"
    )
    # Too large is about the model alone: it does not matter what else is loaded.
    assert decide("big", [cpu(400)], [held("a", 100, 1, "busy")], RAM300) == decision


def test_preloading_evicts_nothing() -> None:
    assert decide("b", [cpu(250)], [held("a", 100, 1)], RAM300, evict=False) == Wait(
        "model 'b' needs 250.0 MiB of RAM; the budget RAM 300.0 MiB is held by a (idle)"
    )
    assert decide("b", [cpu(200)], [held("a", 100, 1)], RAM300, evict=False) == Load(cpu(200))


# A GPU model: every layer on the GPU, half, or none (weights and KV move to RAM as layers leave the GPU).
FULL, HALF, NONE = Cost(9, 500 * MiB, 50 * MiB), Cost(4, 250 * MiB, 300 * MiB), Cost(0, 0, 550 * MiB)
GPU = Budget(vram=600 * MiB, ram=1000 * MiB)


def test_best_placement_first_evicting_idle_models_for_it() -> None:
    other = Holder("a", FULL, 1)
    assert decide("b", [FULL, HALF, NONE], [other], GPU) == Load(FULL, ("a",))


def test_fewer_gpu_layers_when_a_busy_model_holds_the_gpu() -> None:
    other = Holder("a", FULL, 1, "1 request in flight")
    assert decide("b", [FULL, HALF, NONE], [other], GPU) == Load(NONE)  # HALF needs 750 MiB of VRAM beside a
    small_ram = Budget(vram=600 * MiB, ram=500 * MiB)  # NONE cannot fit at all, HALF not beside a: wait
    assert isinstance(decide("b", [FULL, HALF, NONE], [other], small_ram), Wait)


def test_fixed_placement_over_the_vram_budget_is_too_large() -> None:
    decision = decide("fixed", [Cost(9, 700 * MiB, 50 * MiB)], [], GPU)
    assert (
        isinstance(decision, TooLarge)
        and "700.0 MiB of VRAM" in decision.reason
        and "VRAM 600.0 MiB" in decision.reason
    )


def test_no_budget_loads_everything() -> None:
    assert decide("x", [FULL], [Holder(str(i), FULL, i) for i in range(50)], Budget()) == Load(FULL)


sizes = st.integers(1, 400)
holders_st = st.lists(st.tuples(sizes, st.integers(0, 100), st.booleans()), max_size=6)


@given(
    holders_st,
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 400)), min_size=1, max_size=3),
    st.integers(50, 1000),
    st.integers(50, 1000),
)
def test_decisions_keep_the_budget(
    raw: list[tuple[int, int, bool]], raw_options: list[tuple[int, int]], ram_budget: int, vram_budget: int
) -> None:
    """Whatever the situation: a load never exceeds the budget once its victims are gone, evicts only idle models and
    only those it needs; a wait means nothing fits even with every idle model gone; too large means not even alone."""
    budget = Budget(vram=vram_budget, ram=ram_budget)
    holders = [
        Holder(f"m{i}", Cost(0, 0, ram), last, None if idle else "busy") for i, (ram, last, idle) in enumerate(raw)
    ]
    options = [Cost(i, vram, ram) for i, (vram, ram) in enumerate(raw_options)]
    used_ram = sum(h.cost.ram for h in holders)
    decision = decide("x", options, holders, budget)
    if isinstance(decision, TooLarge):
        assert not any(budget.holds(o.vram, o.ram) for o in options)
    elif isinstance(decision, Load):
        freed = sum(h.cost.ram for h in holders if h.name in decision.evict)
        ram_after = used_ram - freed + decision.cost.ram
        assert budget.holds(decision.cost.vram, ram_after)
        assert all(h.busy is None for h in holders if h.name in decision.evict)
        for name in decision.evict:  # each victim is needed: keeping it would break the budget
            victim = next(h for h in holders if h.name == name)
            assert not budget.holds(decision.cost.vram, ram_after + victim.cost.ram)
    else:
        idle_ram = sum(h.cost.ram for h in holders if h.busy is None)
        assert not any(budget.holds(o.vram, used_ram - idle_ram + o.ram) for o in options)


def test_what_the_router_tells_the_planner_about_each_model() -> None:
    """route.ondemand.Entry.busy(): only a loaded, idle, unpinned model may be evicted."""
    from route.catalog import CatalogModel, CostEntry
    from route.ondemand import Entry

    def entry(**kw: object) -> Entry:
        spec = CatalogModel(
            name="m", names=["m"], costs=[CostEntry(layers=0, vram=0, ram=1)], pinned=bool(kw.pop("pinned", False))
        )
        return Entry(spec, **kw)

    assert entry(status="loaded").busy() is None
    assert entry(status="loaded", pinned=True).busy() == "pinned"
    assert entry(status="loaded", active=1).busy() == "1 in flight, 0 waiting"
    assert entry(status="loaded", waiting=2).busy() == "0 in flight, 2 waiting"  # loaded, its waiters not yet resumed
    assert entry(status="loading").busy() == "loading" and entry(status="unloading").busy() == "unloading"
