"""Byte sizes as people read them, in one place for every program's messages."""

from __future__ import annotations


def human(n: float) -> str:
    """`n` bytes as B, KiB, MiB or GiB (one decimal above bytes)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
