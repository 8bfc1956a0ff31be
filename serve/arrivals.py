"""Generation requests that have reached the app but are not admitted yet (being read, validated, rendered).

When several requests arrive together at an idle engine, the first one admitted would start a step alone and
the rest would join a step later, each waiting out a whole step for its first token. Knowing that more are on
their way, the engine holds its first step for them, for a few milliseconds at most (Engine's `gather`): one
step then starts every sequence. A lone request never waits (nothing else is arriving).

Counted from the first moment the app sees a request (an ASGI middleware, before Quart's routing), settled when
the request is admitted (Runtime.start) or ends without being admitted (an error, a client gone).
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

GENERATION_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/messages", "/v1/responses"})


@dataclass(eq=False)
class Ticket:
    settled: bool = False


_TICKET: ContextVar[Ticket | None] = ContextVar("hearth_arrival", default=None)


class Arrivals:
    """The count; read from the engine thread (a plain int read under the GIL), changed on the event loop."""

    def __init__(self) -> None:
        self.count = 0

    def arrive(self) -> Ticket:
        self.count += 1
        return Ticket()

    def settle(self, ticket: Ticket | None = None) -> None:
        """The request's ticket (default: the current request's) leaves the count, once."""
        ticket = ticket or _TICKET.get()
        if ticket is not None and not ticket.settled:
            ticket.settled = True
            self.count -= 1


class CountArrivals:
    """ASGI middleware: each POST to a generation path holds a ticket from its first moment in the app."""

    def __init__(self, app: Any, arrivals: Arrivals) -> None:
        self.app = app
        self.arrivals = arrivals

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in GENERATION_PATHS:
            await self.app(scope, receive, send)
            return
        ticket = self.arrivals.arrive()
        token = _TICKET.set(ticket)  # the tasks Quart starts for the request copy this context
        try:
            await self.app(scope, receive, send)
        finally:
            self.arrivals.settle(ticket)
            _TICKET.reset(token)
