"""Health: the pure state changes for a check result or a failed request, and the loop that runs checks.

Active checks (GET /health every interval) need `unhealthy_after` failures in a row to take a backend
out and `healthy_after` passes to bring it back. Passive ejection (Envoy's outlier detection): a failed
request takes the backend out at once for eject_base * 2^(n-1) seconds (n = its recent ejections, capped
at eject_max; the count resets once it has stayed up eject_max seconds); after that one passing check
brings it back. The last healthy backend of a model is never
ejected: a flaky backend is better than none.

At most PROBES_AT_ONCE checks run together (2,000 probes fired at once time each other out), each is recorded when
it ends, and after a start the first regular checks are spread over an interval rather than all due together.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from route.config import RouterConfig
from route.registry import Backend, Registry

Probe = Callable[[str], Awaitable[str | None]]  # url -> None when healthy, else why not
PROBES_AT_ONCE = 32


def spread(i: int, n: int, now: float, interval: float) -> float:
    """When backend i of n found at start is next checked: spread over the second half of the interval."""
    return now + interval * (1 + i / max(n, 1)) / 2


async def probe_all(urls: list[str], probe: Probe, limit: asyncio.Semaphore | None = None) -> list[str | None]:
    """Probe each URL, PROBES_AT_ONCE at a time; the results in order."""
    limit = limit or asyncio.Semaphore(PROBES_AT_ONCE)

    async def one(url: str) -> str | None:
        async with limit:
            return await probe(url)

    return list(await asyncio.gather(*(one(u) for u in urls)))


def record_check(backend: Backend, error: str | None, now: float, cfg: RouterConfig) -> None:
    backend.last_check = time.time()
    backend.next_check = now + cfg.health_interval
    if error is None:
        backend.fails_in_row = 0
        backend.passes_in_row += 1
        if backend.healthy:
            if backend.streak and now - backend.ejected_at >= cfg.eject_max:
                backend.streak = 0  # long healthy since the last ejection: start again from eject_base
            return
        if backend.ejected_until:
            if now >= backend.ejected_until:
                backend.healthy = True
                backend.ejected_until = 0.0
        elif backend.passes_in_row >= cfg.healthy_after:
            backend.healthy = True
    else:
        backend.passes_in_row = 0
        backend.fails_in_row += 1
        backend.last_error = error
        if backend.healthy and backend.fails_in_row >= cfg.unhealthy_after:
            backend.healthy = False


def record_failure(registry: Registry, backend: Backend, error: str, now: float, cfg: RouterConfig) -> bool:
    """A request to this backend failed; returns True when that ejected it."""
    backend.errors += 1
    backend.last_error = error
    if not backend.healthy or registry.is_last_healthy(backend):
        return False
    backend.ejections += 1
    backend.streak += 1
    backend.healthy = False
    backend.passes_in_row = 0
    backend.ejected_at = now
    backend.ejected_until = now + min(cfg.eject_max, cfg.eject_base * 2 ** min(backend.streak - 1, 30))
    backend.next_check = backend.ejected_until
    return True


def next_wake(registry: Registry, now: float, cfg: RouterConfig) -> float:
    """Seconds until the next check is due."""
    due = min((b.next_check for b in registry.backends.values() if not b.draining), default=now + cfg.health_interval)
    return max(0.0, due - now)


async def run_checks(registry: Registry, probe: Probe, cfg: RouterConfig, wake: asyncio.Event) -> None:
    """Check every backend when due, forever. Only updates state; `wake` is set when a schedule changes."""
    limit = asyncio.Semaphore(PROBES_AT_ONCE)

    async def check(backend: Backend) -> None:
        async with limit:
            error = await probe(backend.url)
        record_check(backend, error, time.monotonic(), cfg)  # its own end time: the next checks stay spread

    while True:
        now = time.monotonic()
        due = [b for b in registry.backends.values() if not b.draining and b.next_check <= now]
        if due:
            await asyncio.gather(*(check(b) for b in due))
        wake.clear()
        # asyncio.timeout, not wait_for: Python 3.11's wait_for drops a cancellation that arrives as the event is set,
        # and the loop then never ends (seen with other routers' word waking it often: route/shared/)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(next_wake(registry, time.monotonic(), cfg)):
                await wake.wait()
