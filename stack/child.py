"""One child process's life: spawn it, wait until it answers its ready path, watch it, restart it with exponential
backoff when it exits or hangs, kill it. What the stack does around that (registering a server with the router,
writing the state file, the child's environment) comes in as hooks, so this module knows nothing of the router.

A child's state (ProcessState, in state.json as its value):

    unloaded -> starting            the router asked for the model (servers the router preloads begin in starting)
    starting -> healthy             it answers its ready path and the hook registered it
    starting -> failed              its first start did not come up (the caller gets StartError)
    healthy|starting -> restarting  it exited or hung (after its first start); it starts again after a backoff
    restarting -> starting
    any -> unloaded | stopped       the router unloaded its model | the stack stopped

Each child runs in its own session (process group), so the terminal's Ctrl-C reaches only the supervisor, which then
stops every group: SIGTERM, and SIGKILL after a timeout. On Linux the children also get SIGTERM if the supervisor
itself dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import aiohttp

from hearth_common.logs import formatted
from hearth_common.procs import CODE_ROOT, start_time
from stack.config import ModelSection
from stack.errors import StartError

log = logging.getLogger("stack")
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0
STABLE_AFTER = 30.0  # a server that stayed up this long starts its backoff over
HANG_GRACE = 2.0  # SIGTERM to SIGKILL for a hung child: a hung process will not shut down gracefully anyway


class ProcessState(StrEnum):
    UNLOADED = "unloaded"
    STARTING = "starting"
    HEALTHY = "healthy"
    RESTARTING = "restarting"
    FAILED = "failed"
    STOPPED = "stopped"


def backoff(failures: int) -> float:
    """Seconds to wait before restart number `failures` (1, 2, ...) in a row: 1, 2, 4, ... up to 30."""
    return min(BACKOFF_FIRST * 2 ** max(failures - 1, 0), BACKOFF_MAX)


@dataclass
class Child:
    name: str  # backend name at the router
    argv: list[str]
    url: str
    ready_path: str  # answers 200 once the process can take traffic
    log: Path
    model: ModelSection | None = None  # None: the router
    model_type: str = "generic"
    env: dict[str, str] = field(default_factory=dict, repr=False)  # keys: never in argv, state.json or a log
    headers: dict[str, str] = field(default_factory=dict, repr=False)  # what the supervisor's checks send
    proc: asyncio.subprocess.Process | None = None
    status: ProcessState = ProcessState.STARTING
    restarts: int = 0
    last_exit: int | None = None
    up: asyncio.Future[None] | None = None  # done once this start's process is healthy and registered

    def view(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.url,
            "pid": self.proc.pid if self.proc else None,
            "started": start_time(self.proc.pid) if self.proc else None,  # with the pid: this process, none other
            "status": self.status.value,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "log": str(self.log),
            **({"models": self.model.names, "model_type": self.model_type} if self.model else {}),
        }


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the supervisor dies, whatever kills it."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


async def spawn(child: Child, env: dict[str, str]) -> None:
    """Start the child's process in its own session, its output appended to its owner-only log."""
    fd = os.open(child.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)  # also a log made before logs were owner-only
    with os.fdopen(fd, "a") as out:
        out.write(formatted("stack", f"starting {child.name}: {' '.join(child.argv)}") + "\n")
        out.flush()
        child.proc = await asyncio.create_subprocess_exec(
            *child.argv,
            cwd=CODE_ROOT,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
    child.status = ProcessState.STARTING


async def kill(child: Child, grace: float) -> None:
    """SIGTERM the child's process group, SIGKILL it after `grace` seconds."""
    proc = child.proc
    if proc is None or proc.returncode is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            await asyncio.wait_for(proc.wait(), grace if sig == signal.SIGTERM else None)
            return
        except TimeoutError:
            log.warning(f"{child.name} ignored SIGTERM for {grace:.0f} s; killing it")


def rss_bytes(pid: int) -> int | None:
    """Resident memory of a process (Linux), for the console's unload line."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass(frozen=True)
class Checks:
    """The hang check of a healthy child: a GET of its ready path starting every `every` seconds (or as soon as the
    last one timed out, if later), each given `timeout` seconds; `misses` failures in a row and it is killed (and so
    restarted). A hung child is killed at most every + (misses - 1) * max(every, timeout) + timeout seconds after it
    hangs, then HANG_GRACE seconds pass before SIGKILL."""

    every: float = 5.0
    timeout: float = 5.0
    misses: int = 2

    def bound(self) -> float:
        """Seconds from a hang to the SIGKILL, at most."""
        return self.every + (self.misses - 1) * max(self.every, self.timeout) + self.timeout + HANG_GRACE


@dataclass(frozen=True)
class Hooks:
    env: Callable[[Child], dict[str, str]]  # the environment its process starts with
    changed: Callable[[], None]  # the child's state changed: write the state file
    came_up: Callable[[Child, bool], Awaitable[None]]  # healthy (True: its first start); StartError fails that start


@dataclass
class Life:
    """Keeps children alive: `keep(child)` runs until cancelled (or its first start fails)."""

    http: aiohttp.ClientSession
    hooks: Hooks
    load_timeout: float = 600.0
    stop_timeout: float = 10.0
    checks: Checks = field(default_factory=Checks)

    async def keep(self, child: Child) -> None:
        """Start the child and restart it whenever it exits; a first start that fails raises StartError."""
        failures = 0
        started_once = False
        while True:
            await spawn(child, self.hooks.env(child))
            self.hooks.changed()
            assert child.proc is not None
            began = time.monotonic()
            if await self.wait_ready(child):
                # A later registration failure means the router is down: its restart registers this one again.
                await self.hooks.came_up(child, not started_once)
                child.status = ProcessState.HEALTHY
                self.hooks.changed()
                if started_once:
                    log.info(f"{child.name} is back (restart {child.restarts})")
                elif child.up is not None and not child.up.done():
                    child.up.set_result(None)
                started_once = True
                await self.watch(child)
            elif not started_once:
                child.status = ProcessState.FAILED
                self.hooks.changed()
                raise StartError(f"{child.name} did not start; the end of {child.log}:\n" + tail(child.log))
            child.last_exit = child.proc.returncode
            child.restarts += 1
            failures = 1 if time.monotonic() - began > STABLE_AFTER else failures + 1
            delay = backoff(failures)
            child.status = ProcessState.RESTARTING
            self.hooks.changed()
            log.warning(f"{child.name} exited with code {child.last_exit}; restarting in {delay:.0f} s")
            await asyncio.sleep(delay)

    async def wait_ready(self, child: Child) -> bool:
        """True once the child answers its ready path with 200; False if it exits or times out (then it is killed)."""
        assert child.proc is not None
        deadline = time.monotonic() + self.load_timeout
        while child.proc.returncode is None and time.monotonic() < deadline:
            try:
                async with self.http.get(
                    child.url + child.ready_path, headers=child.headers, timeout=aiohttp.ClientTimeout(total=2)
                ) as resp:
                    if resp.status == 200:
                        return True
                    body = await resp.json(content_type=None) if resp.status == 503 else None
                    if isinstance(body, dict) and body.get("status") == "error":  # serve: the model failed to load
                        log.warning(f"{child.name} failed to load its model: {body.get('error')}")
                        await kill(child, self.stop_timeout)
                        return False
            except (TimeoutError, aiohttp.ClientError, ValueError):
                pass
            with contextlib.suppress(TimeoutError):
                # Often: a request may be waiting for this load.
                await asyncio.wait_for(asyncio.shield(child.proc.wait()), 0.05)
        if child.proc.returncode is None:
            log.warning(f"{child.name} not ready after {self.load_timeout:.0f} s; killing it")
            await kill(child, 0)
        return False

    async def watch(self, child: Child) -> None:
        """Return when the child exits; kill it first if it stops answering (a hung process is as good as dead)."""
        assert child.proc is not None
        checks = self.checks
        misses = 0
        due = time.monotonic() + checks.every
        while True:
            try:
                await asyncio.wait_for(asyncio.shield(child.proc.wait()), max(due - time.monotonic(), 0))
                return
            except TimeoutError:
                pass
            due = time.monotonic() + checks.every  # from the check's start: a timeout does not add an interval
            try:
                async with self.http.get(
                    child.url + child.ready_path,
                    headers=child.headers,
                    # aiohttp rounds a deadline of 5 s or more up to a whole second unless told not to
                    timeout=aiohttp.ClientTimeout(total=checks.timeout, ceil_threshold=float("inf")),
                ) as r:
                    misses = 0 if r.status == 200 else misses + 1
            except (TimeoutError, aiohttp.ClientError):
                misses += 1
            if misses >= self.checks.misses:
                log.warning(f"{child.name} has not answered {child.ready_path} for {misses} checks; restarting it")
                await kill(child, HANG_GRACE)
