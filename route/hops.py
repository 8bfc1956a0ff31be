"""Loop detection: each router names itself in a `Via` header (RFC 9110 7.6.3) on what it forwards, and refuses
a request that already names it (508 Loop Detected), or that has passed more routers than any sane chain has.
A backend URL that points back at the router, directly or through other routers, ends at the first repeat."""

from __future__ import annotations

import secrets

MAX_HOPS = 16
LOOP = 508  # Loop Detected: what a router answers to a request that names it already


def new_hop() -> str:
    """This router's name in Via headers: random per process, so two routers never share one."""
    return f"hearth-{secrets.token_hex(8)}"


def via_entries(values: list[str]) -> list[str]:
    """The received-by names of every Via header value, in order."""
    names = []
    for value in values:
        for entry in value.split(","):
            parts = entry.split()
            if len(parts) >= 2:
                names.append(parts[1])
    return names


def looped(values: list[str], hop: str) -> bool:
    names = via_entries(values)
    return hop in names or len(names) >= MAX_HOPS


def forward_via(values: list[str], hop: str) -> str:
    """The Via value to send on: what came in, then this router."""
    return ", ".join([*values, f"1.1 {hop}"])
