"""Which backend hosts /backends/register accepts (--allow-backend-hosts). Pure logic, no name lookups.

A pattern is `*` (any host), an IP address, a network (`10.0.0.0/8`), a host name, or `*.domain` (its subdomains).
Names are compared as written, never resolved: a lookup would answer differently by the time the router connects.
"""

from __future__ import annotations

import ipaddress
import re

HOST_NAME = re.compile(
    r"^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*$"
)


def check_pattern(pattern: str) -> None:
    """Raise ValueError when `pattern` is none of the forms above."""
    if pattern == "*":
        return
    try:
        ipaddress.ip_network(pattern, strict=False)
        return
    except ValueError:
        pass
    if not HOST_NAME.match(pattern):
        raise ValueError(f"{pattern!r} is not an IP address, a network, a host name, *.domain or *")


def host_allowed(host: str, patterns: list[str]) -> bool:
    host = host.strip("[]").lower().rstrip(".")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:  # ::ffff:10.0.0.1 is 10.0.0.1
        address = address.ipv4_mapped
    for pattern in patterns:
        if pattern == "*":
            return True
        if address is not None:
            try:
                if address in ipaddress.ip_network(pattern, strict=False):
                    return True
            except ValueError:
                continue
        else:
            p = pattern.lower()
            if host == p or (p.startswith("*.") and host.endswith(p[1:])):
                return True
    return False
