"""Before a stack starts: end what the last stack with this state folder left running, and refuse a port that
something else holds.

The parent-death signal (stack/child.py) is SIGTERM, which a stopped process (SIGSTOP) or one that ignores SIGTERM
outlives: killed with SIGKILL, a supervisor can leave a server holding its port. Its state.json still lists every
process with its pid and start time, so the next start ends those (SIGTERM and SIGCONT, SIGKILL after a short grace),
and only those: a pid whose start time differs is another process that reused the number, and is left alone.
A state file whose supervisor still runs belongs to a live stack: that is a start-up error, not a clean-up.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hearth_common.procs import start_time
from stack.config import StackConfig
from stack.errors import StartError

log = logging.getLogger("stack")
GRACE = 2.0  # seconds between SIGTERM and SIGKILL for a leftover process


def ours(pid: object, started: object) -> bool:
    """True when `pid` runs and is the process state.json recorded (same start time)."""
    return isinstance(pid, int) and isinstance(started, int) and pid > 0 and start_time(pid) == started


def _end(pids: list[int]) -> None:
    """SIGTERM each process group (the children lead their own) and SIGCONT it, so that a stopped one sees the
    SIGTERM; SIGKILL what is left after GRACE seconds."""
    first = {pid: start_time(pid) for pid in pids}
    for sig in (signal.SIGTERM, signal.SIGCONT):
        for pid in pids:
            _signal(pid, sig)
    deadline = time.monotonic() + GRACE
    while any(start_time(p) == first[p] for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in pids:
        if start_time(pid) == first[pid]:
            _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + GRACE
    while any(start_time(p) == first[p] for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def end_leftovers(state_dir: Path) -> list[str]:
    """End the processes the last stack in `state_dir` left running; the names of those it ended. StartError when
    that stack's supervisor still runs."""
    try:
        state: Any = json.loads((state_dir / "state.json").read_text())
        processes = [state["router"], *state["servers"]]
    except (OSError, ValueError, TypeError, KeyError):
        return []
    if state.get("pid") != os.getpid() and ours(state.get("pid"), state.get("started")):
        raise StartError(
            f"another stack (pid {state['pid']}) runs with the state folder {state_dir}; stop it or give "
            f"another --state-dir"
        )
    left = [p for p in processes if isinstance(p, dict) and ours(p.get("pid"), p.get("started"))]
    if left:
        names = [f"{p.get('name')} (pid {p['pid']})" for p in left]
        log.warning(f"ending what the last stack in {state_dir} left running: {', '.join(names)}")
        _end([p["pid"] for p in left])
    return [str(p.get("name")) for p in left]


# -- ports ------------------------------------------------------------------------------------------------------------


def fixed_ports(stack: StackConfig) -> list[tuple[str, str, int]]:
    """(who, host, port) for every port the stack file fixes: the router's and each model server's."""
    out = [("the router", stack.router.host, stack.router.port)] if stack.router.port else []
    for m in stack.models:
        if m.port:
            out += [(f"model {m.name}", "127.0.0.1", m.port + i) for i in range(m.replicas)]
    return out


def port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind: TIME_WAIT is no obstacle
        try:
            s.bind((host, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def _listen_inodes(port: int) -> set[str]:
    """Socket inodes listening on `port` (/proc/net/tcp and tcp6; state 0A is LISTEN)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(cols[9])
    return inodes


def _pids() -> Iterable[int]:
    return (int(d.name) for d in Path("/proc").iterdir() if d.name.isdigit())


def holder(port: int) -> str | None:
    """`pid N (command line)` of a process listening on `port`, when /proc tells (Linux, a process we may see)."""
    inodes = {f"socket:[{i}]" for i in _listen_inodes(port)}
    if not inodes:
        return None
    for pid in _pids():
        with contextlib.suppress(OSError):
            fds = Path(f"/proc/{pid}/fd")
            if any(os.readlink(fds / fd) in inodes for fd in os.listdir(fds)):
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                return f"pid {pid} ({cmd.strip()[:120]})"
    return None


def check_ports(stack: StackConfig) -> None:
    """StartError naming the first fixed port something holds, and the process holding it when known."""
    for who, host, port in fixed_ports(stack):
        if not port_free(host, port):
            by = holder(port)
            raise StartError(f"port {port} ({who}) is in use by {by or 'another process'}")
