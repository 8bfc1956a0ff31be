"""What every benchmark returns: rows of (figure, ratio against a same-run baseline, goal)."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    bench: str  # "convert", "serve", "route", "e2e"
    figure: str  # what was measured, e.g. "bf16 throughput vs plain copy"
    value: float  # the measured figure (MB/s, tok/s, ms, ...)
    unit: str
    ratio: float | None  # value against the baseline measured in the same run
    goal: str  # e.g. ">= 0.5 x" ; "" when there is no goal
    met: bool | None  # None when there is no goal

    def markdown(self) -> str:
        ratio = "" if self.ratio is None else f"{self.ratio:.2f}"
        met = {True: "yes", False: "**no**", None: ""}[self.met]
        return f"| {self.bench} | {self.figure} | {self.value:,.2f} {self.unit} | {ratio} | {self.goal} | {met} |"


HEADER = "| bench | figure | value | ratio | goal | met |\n|---|---|---|---|---|---|"


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.platform()}"


def table(rows: list[Row]) -> str:
    return "\n".join([HEADER, *(r.markdown() for r in rows)])
