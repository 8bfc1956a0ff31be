"""Which models may be loaded side by side under a memory budget: the pure decision behind on-demand loading.

No I/O, no clock, no event loop: the router's on-demand manager (route/ondemand.py) describes the situation (the
placements the wanted model can take, the models holding memory now, the budget) and acts on the answer:

- `Load(cost, evict)`: start the model with this placement once the listed idle models are unloaded;
- `Wait(reason)`: it would fit, but busy models hold the room (requests in flight or queued, loading, unloading,
  pinned): try again when one of them changes;
- `TooLarge(reason)`: it cannot fit even with nothing else loaded; the reason names its size and the budget.

A model's placements come from the stack (stack/plan.py's `costs`): most GPU layers first, each with the VRAM and RAM
it takes when loaded (weights on each side, KV cache, compute buffers, the server process). The policy:

1. Only placements that fit the empty budget count. The best of them (most GPU layers) is tried first.
2. A placement that fits beside the loaded models loads at once. Otherwise idle models (nothing in flight or waiting,
   not pinned, fully loaded) are unloaded least recently used first until it fits; a victim the room turns out not
   to need after all (a later, larger victim freed enough) is kept, most recently used first.
3. A placement with fewer GPU layers is tried only when the better one cannot fit even after evicting every idle
   model: a model starting now half on the CPU beats a client waiting for a busy model to finish.
4. With `evict=False` (preloading at start) nothing is evicted: the model loads if it fits beside the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hearth_common.units import human


@dataclass(frozen=True)
class Cost:
    """One placement of a model: its GPU layer count and the bytes it then holds on each side."""

    layers: int  # --n-gpu-layers
    vram: int
    ram: int


@dataclass(frozen=True)
class Budget:
    vram: int | None = None  # bytes; None: no limit
    ram: int | None = None

    def holds(self, vram: int, ram: int) -> bool:
        return (self.vram is None or vram <= self.vram) and (self.ram is None or ram <= self.ram)

    def describe(self) -> str:
        limits = (("RAM", self.ram), ("VRAM", self.vram))
        parts = [f"{label} {human(limit)}" for label, limit in limits if limit is not None]
        return "budget " + ", ".join(parts) if parts else "no budget"


@dataclass(frozen=True)
class Holder:
    """A model that holds memory now (loaded, loading or unloading)."""

    name: str
    cost: Cost
    last_used: float  # any clock; smaller is older
    busy: str | None = None  # why it cannot be unloaded now ("1 request in flight", "loading", "pinned"); None: idle


@dataclass(frozen=True)
class Load:
    cost: Cost
    evict: tuple[str, ...] = ()  # unload these first, in this order


@dataclass(frozen=True)
class Wait:
    reason: str


@dataclass(frozen=True)
class TooLarge:
    reason: str


Decision = Load | Wait | TooLarge


def size(cost: Cost) -> str:
    return f"{human(cost.ram)} of RAM" + (f" and {human(cost.vram)} of VRAM" if cost.vram else "")


def decide(
    name: str, options: Sequence[Cost], holders: Sequence[Holder], budget: Budget, evict: bool = True
) -> Decision:
    """What to do to load `name`. `options`: its placements, best first; `holders`: every model holding memory."""
    if not options:
        raise ValueError(f"{name}: no placement to choose from")
    alone = [c for c in options if budget.holds(c.vram, c.ram)]
    if not alone:
        closest = min(options, key=lambda c: _overflow(c, budget))
        return TooLarge(
            f"model {name!r} needs {size(closest)} when loaded, more than the {budget.describe()} "
            "allows even with no other model loaded"
        )
    used_vram = sum(h.cost.vram for h in holders)
    used_ram = sum(h.cost.ram for h in holders)
    idle = sorted((h for h in holders if h.busy is None), key=lambda h: (h.last_used, h.name)) if evict else []
    for option in alone:
        victims = _victims(option, used_vram, used_ram, idle, budget)
        if victims is not None:
            return Load(option, tuple(v.name for v in victims))
    held = ", ".join(f"{h.name} ({h.busy or 'idle'})" for h in holders) or "nothing"
    return Wait(f"model {name!r} needs {size(alone[0])}; the {budget.describe()} is held by {held}")


def _overflow(cost: Cost, budget: Budget) -> int:
    over_ram = max(cost.ram - budget.ram, 0) if budget.ram is not None else 0
    over_vram = max(cost.vram - budget.vram, 0) if budget.vram is not None else 0
    return over_ram + over_vram


def _victims(option: Cost, used_vram: int, used_ram: int, idle: list[Holder], budget: Budget) -> list[Holder] | None:
    """The idle models to unload so that `option` fits (least recently used first), or None if it cannot."""
    vram, ram = used_vram + option.vram, used_ram + option.ram
    chosen: list[Holder] = []
    for holder in idle:
        if budget.holds(vram, ram):
            break
        chosen.append(holder)
        vram, ram = vram - holder.cost.vram, ram - holder.cost.ram
    if not budget.holds(vram, ram):
        return None
    for holder in reversed(chosen[:]):  # most recently used first: keep those the room does not need
        if budget.holds(vram + holder.cost.vram, ram + holder.cost.ram):
            chosen.remove(holder)
            vram, ram = vram + holder.cost.vram, ram + holder.cost.ram
    return chosen
