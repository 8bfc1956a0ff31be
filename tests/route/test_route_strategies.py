"""Each strategy alone, on plain objects: no router, no I/O."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pytest

from route.config import RouterConfig
from route.strategies import STRATEGIES, LeastConnections, Prefix, Random, RoundRobin, RouteRequest, Sticky, Weighted


@dataclass
class T:
    name: str
    active: int = 0
    weight: float = 1.0


REQ = RouteRequest("m")


def backends(n: int) -> list[T]:
    return [T(f"b{i}") for i in range(n)]


def test_table_builds_every_strategy() -> None:
    cfg = RouterConfig()
    for name, make in STRATEGIES.items():
        assert make(cfg).choose(backends(2), REQ).name in {"b0", "b1"}, name


def test_round_robin_alternates_exactly() -> None:
    rr, bs = RoundRobin(), backends(3)
    assert [rr.choose(bs, REQ).name for _ in range(9)] == ["b0", "b1", "b2"] * 3


def test_least_connections_prefers_idle_and_breaks_ties_in_turn() -> None:
    lc, bs = LeastConnections(), backends(3)
    bs[0].active, bs[1].active, bs[2].active = 2, 0, 1
    assert lc.choose(bs, REQ).name == "b1"
    bs[1].active = 2
    assert lc.choose(bs, REQ).name == "b2"
    for b in bs:
        b.active = 0
    picks = [lc.choose(bs, REQ).name for _ in range(30)]
    assert Counter(picks) == {"b0": 10, "b1": 10, "b2": 10}


def test_weighted_shares_are_exact_and_smooth() -> None:
    w = Weighted()
    bs = [T("a", weight=3), T("b", weight=1), T("c", weight=2)]
    picks = [w.choose(bs, REQ).name for _ in range(600)]
    assert Counter(picks) == {"a": 300, "b": 100, "c": 200}
    # smooth: the heaviest never gets more than its share in a row (nginx's property)
    longest = max(len(run) for run in "".join(picks).replace("b", " ").replace("c", " ").split())
    assert longest <= 2


def test_random_is_roughly_uniform() -> None:
    r, bs = Random(seed=1), backends(4)
    counts = Counter(r.choose(bs, REQ).name for _ in range(4000))
    assert all(850 <= c <= 1150 for c in counts.values()), counts


def test_sticky_keeps_a_session_and_moves_few_on_change() -> None:
    st = Sticky()
    bs = backends(4)
    sessions = [f"user-{i}" for i in range(2000)]
    first = {s: st.choose(bs, RouteRequest("m", s)).name for s in sessions}
    assert first == {s: st.choose(bs, RouteRequest("m", s)).name for s in sessions}  # stable
    spread = Counter(first.values())
    assert all(300 <= c <= 700 for c in spread.values()), spread
    # b3 goes away: only its sessions move
    after = {s: st.choose(bs[:3], RouteRequest("m", s)).name for s in sessions}
    moved = [s for s in sessions if after[s] != first[s]]
    assert moved and all(first[s] == "b3" for s in moved)
    # a fifth joins: about a fifth of the sessions move, all of them to it
    grown = [*bs, T("b4")]
    joined = {s: st.choose(grown, RouteRequest("m", s)).name for s in sessions}
    moved = [s for s in sessions if joined[s] != first[s]]
    assert all(joined[s] == "b4" for s in moved)
    assert 250 <= len(moved) <= 550, len(moved)
    # the ring hash is the same in every process (no PYTHONHASHSEED dependence)
    assert Sticky().choose(bs, RouteRequest("m", "user-0")).name == first["user-0"]


def test_sticky_without_session_falls_back_to_least_connections() -> None:
    st, bs = Sticky(), backends(2)
    bs[0].active = 5
    assert {st.choose(bs, REQ).name for _ in range(5)} == {"b1"}


def test_prefix_sends_shared_prefixes_to_one_backend() -> None:
    px, bs = Prefix(block=16, threshold=0.5, margin=2), backends(3)
    system = "You are a careful assistant. " * 20
    picks = {px.choose(bs, RouteRequest("m", prompt=system + f"question {i}")).name for i in range(30)}
    assert len(picks) == 1
    # unrelated prompts spread over the backends (least connections with turns)
    others = {px.choose(bs, RouteRequest("m", prompt=f"{i} " * 200)).name for i in range(9)}
    assert others == {"b0", "b1", "b2"}


def test_prefix_leaves_a_busy_backend_beyond_the_margin() -> None:
    px, bs = Prefix(block=16, threshold=0.5, margin=2), backends(2)
    prompt = "shared context " * 40
    home = px.choose(bs, RouteRequest("m", prompt=prompt + "a"))
    other = next(b for b in bs if b is not home)
    home.active = 2  # within the margin: stays
    assert px.choose(bs, RouteRequest("m", prompt=prompt + "b")) is home
    home.active = 3  # beyond it: least loaded wins, and now holds the prefix too
    assert px.choose(bs, RouteRequest("m", prompt=prompt + "c")) is other


def test_prefix_needs_the_threshold_share() -> None:
    px, bs = Prefix(block=8, threshold=0.9, margin=0), backends(2)
    first = px.choose(bs, RouteRequest("m", prompt="x" * 80))
    first.active = 0
    # half the prompt matches: below 0.9, so least connections decides (the turn moves on)
    picks = {px.choose(bs, RouteRequest("m", prompt="x" * 40 + chr(97 + i) * 40)).name for i in range(4)}
    assert picks == {"b0", "b1"}


@pytest.mark.parametrize("cls", [RoundRobin, LeastConnections, Weighted, Sticky, Prefix])
def test_single_candidate_always_chosen(cls: type) -> None:
    only = [T("solo")]
    s = cls()
    assert all(s.choose(only, RouteRequest("m", f"s{i}", f"p{i}")) is only[0] for i in range(5))
