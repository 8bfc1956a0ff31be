"""route/lifecycle.py alone: every allowed change of load state passes, every other one raises."""

from __future__ import annotations

import itertools

import pytest

from route.lifecycle import TRANSITIONS, IllegalTransition, LoadState, advance

U, LG, L, UG = LoadState.UNLOADED, LoadState.LOADING, LoadState.LOADED, LoadState.UNLOADING
ALLOWED = {(U, LG), (U, L), (LG, L), (LG, U), (L, UG), (UG, U)}


def test_the_wire_strings_stay() -> None:
    assert [s.value for s in LoadState] == ["unloaded", "loading", "loaded", "unloading"]


def test_the_table_covers_every_state() -> None:
    assert set(TRANSITIONS) == set(LoadState)
    assert {(a, b) for a, targets in TRANSITIONS.items() for b in targets} == ALLOWED


@pytest.mark.parametrize(("current", "new"), sorted(ALLOWED))
def test_allowed(current: LoadState, new: LoadState) -> None:
    assert advance("m", current, new) is new


@pytest.mark.parametrize(("current", "new"), [p for p in itertools.product(LoadState, repeat=2) if p not in ALLOWED])
def test_refused(current: LoadState, new: LoadState) -> None:
    with pytest.raises(IllegalTransition) as caught:
        advance("m", current, new)
    assert caught.value.current is current and caught.value.new is new
    assert f"'m': {current.value} -> {new.value}" in str(caught.value)


def test_a_whole_life() -> None:
    state = U
    for new in (LG, L, UG, U, LG, U, L):  # load, unload, a failed load, an adopted one
        state = advance("m", state, new)
    assert state is L
