"""Routing strategies: small objects that pick one of the candidate backends. No I/O.

Each strategy instance serves one model (the app keeps one per model name), so its counters and
caches are per model. Candidates come sorted by name, healthy and not draining, never empty.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from hearth_common.names import StrategyName
from route.config import RouterConfig


class Target(Protocol):
    """What a strategy may look at: a backend's name, its requests in flight and its weight."""

    @property
    def name(self) -> str: ...
    @property
    def active(self) -> int: ...
    @property
    def weight(self) -> float: ...


T = TypeVar("T", bound=Target)


@dataclass(frozen=True)
class RouteRequest:
    model: str
    session: str | None = None  # the `user` field or the X-Session-Id header
    prompt: str = ""  # the prompt text, for prefix matching


class Strategy(Protocol):
    def choose(self, candidates: Sequence[T], request: RouteRequest) -> T: ...


class RoundRobin:
    def __init__(self) -> None:
        self._turn = 0

    def choose(self, candidates: Sequence[T], request: RouteRequest) -> T:
        pick = candidates[self._turn % len(candidates)]
        self._turn += 1
        return pick


class LeastConnections:
    """Fewest requests in flight; ties go round robin so idle backends share the work."""

    def __init__(self) -> None:
        self._turn = 0

    def choose(self, candidates: Sequence[T], request: RouteRequest) -> T:
        least = min(c.active for c in candidates)
        tied = [c for c in candidates if c.active == least]
        pick = tied[self._turn % len(tied)]
        self._turn += 1
        return pick


class Random:
    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)

    def choose(self, candidates: Sequence[T], request: RouteRequest) -> T:
        return self._rng.choice(candidates)


class Weighted:
    """nginx's smooth weighted round robin: exact shares over each cycle, no bursts to one backend."""

    def __init__(self) -> None:
        self._current: dict[str, float] = {}

    def choose(self, candidates: Sequence[T], request: RouteRequest) -> T:
        total = 0.0
        best = candidates[0]
        best_score = float("-inf")
        for c in candidates:
            score = self._current.get(c.name, 0.0) + c.weight
            self._current[c.name] = score
            total += c.weight
            if score > best_score:
                best, best_score = c, score
        self._current[best.name] -= total
        return best


JOURNAL_MAX = 10_000  # records a Prefix keeps for the shared index between two sync passes


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class Sticky:
    """Consistent hashing of the session key over the candidates (ketama-style virtual nodes).

    Adding or losing a backend moves only the sessions that hashed to it. The ring hashes are stable
    across processes, so sessions keep their backend across a router restart. No key: least connections.
    """

    def __init__(self, vnodes: int = 160) -> None:
        self._vnodes = vnodes
        self._rings: OrderedDict[tuple[str, ...], tuple[list[int], list[str]]] = OrderedDict()
        self._fallback = LeastConnections()

    def _ring(self, names: tuple[str, ...]) -> tuple[list[int], list[str]]:
        ring = self._rings.get(names)
        if ring is None:
            points = sorted((_hash64(f"{name}#{i}"), name) for name in names for i in range(self._vnodes))
            ring = ([p for p, _ in points], [n for _, n in points])
            self._rings[names] = ring
            if len(self._rings) > 64:  # candidate sets change rarely; keep a few
                self._rings.popitem(last=False)
        return ring

    def choose(self, candidates: Sequence[T], request: RouteRequest) -> T:
        if not request.session:
            return self._fallback.choose(candidates, request)
        hashes, owners = self._ring(tuple(c.name for c in candidates))
        i = bisect.bisect(hashes, _hash64(request.session)) % len(hashes)
        owner = owners[i]
        return next(c for c in candidates if c.name == owner)


class Prefix:
    """Cache-aware routing after SGLang's router: send a prompt to the backend that served its longest prefix.

    Prompts are cut into blocks of `block` characters and each block is keyed by a hash chained over
    the blocks before it, so a key stands for a whole prefix (vLLM's prefix-cache scheme). The backend
    holding the deepest matching key wins when the match covers at least `threshold` of the prompt and
    it runs at most `margin` more requests than the least-loaded candidate; otherwise least connections
    picks. Either way the chosen backend is recorded as holding every prefix of this prompt.

    Router replicas share the index (route/shared/sync.py): the keys are the same in every process (a keyed hash,
    not Python's salted one), `journal` (on once shared) collects what this router learned that it did not know,
    and `learn` takes what another router learned. No I/O here either way.
    """

    def __init__(self, block: int = 64, threshold: float = 0.5, margin: int = 4, max_entries: int = 100_000) -> None:
        self._block = block
        self._threshold = threshold
        self._margin = margin
        self._max_entries = max_entries
        self._holders: OrderedDict[int, set[str]] = OrderedDict()  # prefix key -> backends; LRU order
        self._fallback = LeastConnections()
        self.journal: list[tuple[str, list[int]]] | None = None  # (backend, keys new to it) not yet shared

    def _keys(self, text: str) -> list[tuple[int, int]]:
        """(prefix key, characters covered) for each block, the last one possibly partial."""
        keys = []
        h = b""
        for start in range(0, len(text), self._block):
            chunk = text[start : start + self._block]
            h = hashlib.blake2b(h + chunk.encode(), digest_size=8).digest()
            keys.append((int.from_bytes(h, "big"), start + len(chunk)))
        return keys

    def choose(self, candidates: Sequence[T], request: RouteRequest) -> T:
        keys = self._keys(request.prompt)
        by_name = {c.name: c for c in candidates}
        matched: T | None = None
        covered = 0
        for key, end in keys:
            holders = self._holders.get(key)
            live = [by_name[n] for n in holders if n in by_name] if holders else []
            if not live:
                break
            matched, covered = min(live, key=lambda c: (c.active, c.name)), end
        least = min(c.active for c in candidates)
        if (
            matched is not None
            and covered >= self._threshold * len(request.prompt)
            and matched.active <= least + self._margin
        ):
            pick = matched
        else:
            pick = self._fallback.choose(candidates, request)
        self._record(keys, pick.name)
        return pick

    def _record(self, keys: list[tuple[int, int]], name: str) -> None:
        new = self.learn([key for key, _ in keys], name)
        if new and self.journal is not None:
            self.journal.append((name, new))
            del self.journal[:-JOURNAL_MAX]  # unshared for long (Redis down): the oldest are only lost to the others

    def learn(self, keys: list[int], name: str) -> list[int]:
        """Record `name` as holding these prefixes; returns those it was not known to hold."""
        new = []
        for key in keys:
            holders = self._holders.get(key)
            if holders is None:
                self._holders[key] = {name}
                new.append(key)
            else:
                if name not in holders:
                    holders.add(name)
                    new.append(key)
                self._holders.move_to_end(key)
        while len(self._holders) > self._max_entries:
            self._holders.popitem(last=False)
        return new


STRATEGIES: dict[StrategyName, Callable[[RouterConfig], Strategy]] = {
    "round_robin": lambda cfg: RoundRobin(),
    "least_connections": lambda cfg: LeastConnections(),
    "random": lambda cfg: Random(),
    "weighted": lambda cfg: Weighted(),
    "sticky": lambda cfg: Sticky(),
    "prefix": lambda cfg: Prefix(cfg.prefix_block, cfg.prefix_threshold, cfg.prefix_margin),
}
