"""A stack model's load state and the changes allowed between states: pure, no I/O, no clock.

    unloaded --> loading --> loaded --> unloading --> unloaded
        |           |                                    ^
        |           +------(the start failed)------------+ (back to unloaded)
        +------------------------> loaded  (a restarted router adopts a model the supervisor already runs)

route/ondemand.py moves a model only through `advance`, so a change the table does not list is a bug in the router
and raises IllegalTransition at once instead of leaving a model in a state nothing expects (as llama-swap's
ProcessState does in proxy/process.go). The values are the wire strings of /v1/models' `status` and of the
supervisor's GET /models.
"""

from __future__ import annotations

from enum import StrEnum


class LoadState(StrEnum):
    UNLOADED = "unloaded"  # no server runs; a request for it starts a load
    LOADING = "loading"  # the supervisor is starting its servers; requests wait for the one load
    LOADED = "loaded"  # its servers are up; requests are routed to it
    UNLOADING = "unloading"  # no new request is routed to it; its servers stop once its requests in flight end


TRANSITIONS: dict[LoadState, frozenset[LoadState]] = {
    LoadState.UNLOADED: frozenset({LoadState.LOADING, LoadState.LOADED}),
    LoadState.LOADING: frozenset({LoadState.LOADED, LoadState.UNLOADED}),
    LoadState.LOADED: frozenset({LoadState.UNLOADING}),
    LoadState.UNLOADING: frozenset({LoadState.UNLOADED}),
}


class IllegalTransition(RuntimeError):
    """A change of load state the table does not allow: a programming error, never a client's or a backend's."""

    def __init__(self, model: str, current: LoadState, new: LoadState) -> None:
        super().__init__(f"model {model!r}: {current.value} -> {new.value} is not an allowed change of load state")
        self.current = current
        self.new = new


def advance(model: str, current: LoadState, new: LoadState) -> LoadState:
    """`new` when the table allows current -> new; else IllegalTransition."""
    if new not in TRANSITIONS[current]:
        raise IllegalTransition(model, current, new)
    return new
