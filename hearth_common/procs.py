"""How our programs start each other: a free loopback port, and the environment and folder a `python -m serve|route|
stack` child runs with. The stack's supervisor uses these; so does testkit.procs, for the tests and benchmarks."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path

# The folder holding our packages: a checkout, or site-packages for an installed wheel. Children run there so that
# `python -m serve` imports ours (not a `serve/` in the caller's folder); a checkout also goes on their PYTHONPATH
# (site-packages must not: it would come before the standard library).
CODE_ROOT = Path(__file__).resolve().parents[1]
IN_CHECKOUT = (CODE_ROOT / "pyproject.toml").is_file()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the OS's pick; another process may take it before it is bound)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot, /proc/PID/stat field 22), or None when it is gone (or a
    zombie, which holds no port)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] == "Z":
        return None
    return int(fields[19])


def child_env(environ: Mapping[str, str] = os.environ, **extra: str) -> dict[str, str]:
    """`environ` for a `python -m serve|route|stack` child, with this checkout first on PYTHONPATH when run from one."""
    env = {**environ, **extra}
    if IN_CHECKOUT:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CODE_ROOT), environ.get("PYTHONPATH")]))
    return env
