"""What each model server says of its load and speed, for the web page: requests running and queued, and the recent
time to first token and tokens per second, read from its Prometheus /metrics (serve/metrics.py's names).

Histograms there are cumulative, so "recent" is the difference between the newest reading and the oldest one kept
(at most WINDOW seconds old): the mean over the requests that finished in that time; when none did, the mean since
the server started. Readings are taken at most every `every` seconds, however many pages watch, and only while
one does (route/ui.py asks before each snapshot). Parsing and the arithmetic (`Reading`, `Stats`) do no I/O; the
transport is injected (`Fetch`), so unit tests give it text.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger("route.ui")

WINDOW = 60.0  # seconds of readings kept per server
TIMEOUT = 1.0  # seconds a server's /metrics may take
RUNNING, WAITING = "hearth_requests_running", "hearth_requests_waiting"
TTFT, TPS = "hearth_time_to_first_token_seconds", "hearth_tokens_per_second"

Fetch = Callable[[str, Mapping[str, str]], Awaitable[str | None]]  # (url, headers) -> body, None when it failed


@dataclass(frozen=True)
class Reading:
    """One server's /metrics at one moment: gauges, and the (sum, count) of two histograms."""

    at: float
    running: float = 0.0
    waiting: float = 0.0
    ttft: tuple[float, float] = (0.0, 0.0)
    tps: tuple[float, float] = (0.0, 0.0)


def parse(text: str, at: float) -> Reading:
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[sample.name] = values.get(sample.name, 0.0) + sample.value  # summed over labels
    return Reading(
        at,
        values.get(RUNNING, 0.0),
        values.get(WAITING, 0.0),
        (values.get(TTFT + "_sum", 0.0), values.get(TTFT + "_count", 0.0)),
        (values.get(TPS + "_sum", 0.0), values.get(TPS + "_count", 0.0)),
    )


def recent(readings: Iterable[Reading], pick: Callable[[Reading], tuple[float, float]]) -> tuple[float, float]:
    """(sum, count) over the requests between the oldest and the newest reading; since the start when none."""
    items = list(readings)
    if not items:
        return 0.0, 0.0
    (s0, c0), (s1, c1) = pick(items[0]), pick(items[-1])
    if c1 > c0:
        return s1 - s0, c1 - c0
    return s1, c1


class Stats:
    """Readings per server (by backend name), kept for WINDOW seconds; `model()` folds a model's servers."""

    def __init__(self, window: float = WINDOW) -> None:
        self.window = window
        self._readings: dict[str, deque[Reading]] = {}

    def add(self, backend: str, reading: Reading) -> None:
        kept = self._readings.setdefault(backend, deque())
        kept.append(reading)
        while kept and kept[0].at < reading.at - self.window:
            kept.popleft()

    def forget(self, keep: Iterable[str]) -> None:
        """Drop the readings of servers that are gone (unloaded, unregistered)."""
        names = set(keep)
        for name in [n for n in self._readings if n not in names]:
            del self._readings[name]

    def model(self, backends: Iterable[str]) -> dict[str, Any]:
        """running, queued, ttft_ms and tokens_per_s over a model's servers (None where no server answered)."""
        kept = [self._readings[b] for b in backends if self._readings.get(b)]
        if not kept:
            return {"running": None, "queued": None, "ttft_ms": None, "tokens_per_s": None}
        ttft = [recent(r, lambda x: x.ttft) for r in kept]
        tps = [recent(r, lambda x: x.tps) for r in kept]
        ttft_n, tps_n = sum(c for _, c in ttft), sum(c for _, c in tps)
        return {
            "running": int(sum(r[-1].running for r in kept)),
            "queued": int(sum(r[-1].waiting for r in kept)),
            "ttft_ms": round(sum(s for s, _ in ttft) / ttft_n * 1000, 1) if ttft_n else None,
            "tokens_per_s": round(sum(s for s, _ in tps) / tps_n, 1) if tps_n else None,
        }


class Scraper:
    """Reads the servers' /metrics at most every `every` seconds, all at once, into `stats`."""

    def __init__(self, fetch: Fetch, key: str | None, every: float = 1.0) -> None:
        self.fetch = fetch
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.every = every
        self.stats = Stats()
        self._last = 0.0
        self._lock: asyncio.Lock | None = None

    async def refresh(self, backends: Mapping[str, str]) -> None:
        """`backends`: name -> URL of the servers to read now (the healthy ones)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if time.monotonic() - self._last < self.every:
                return
            self._last = time.monotonic()
            names = list(backends)
            bodies = await asyncio.gather(*(self.fetch(backends[n] + "/metrics", self.headers) for n in names))
            now = time.monotonic()
            for name, body in zip(names, bodies, strict=True):
                if body is None:
                    continue
                try:
                    self.stats.add(name, parse(body, now))
                except ValueError:  # not Prometheus text: not one of ours
                    log.debug("unreadable /metrics from %s", name)
            self.stats.forget(names)


class AiohttpFetch:
    """The real transport: one session, made on first use (on the serving loop), closed by `close()`."""

    def __init__(self, timeout: float = TIMEOUT) -> None:
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, url: str, headers: Mapping[str, str]) -> str | None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        try:
            async with self._session.get(url, headers=headers, allow_redirects=False) as resp:
                return await resp.text() if resp.status == 200 else None
        except (TimeoutError, aiohttp.ClientError):
            return None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
