"""Router replicas over shared state (Redis): what sharing costs on a request, and what more replicas add.

One run starts a canned backend (testkit/backend.py), one router without shared state, and three routers over one
redis-server (testkit/redis.py), the backend registered on each (on the shared ones it reaches the others through
Redis). Then, interleaved, median of REPEATS runs each:
- latency at 1 connection: direct, through the router alone, through one replica with shared state: the added p50
  and p99 of each (goal: Redis adds at most 0.5 ms at p50);
- requests/s at 16 connections spread evenly over 1, 2 and 3 replicas, against the router alone (goal: 2 replicas
  serve at least 1.5x one).
The load generator is an aiohttp client in this process (wrk cannot spread one run over several URLs); it competes
for the same cores, so on 2 shared cores the replicas' figures are a floor. The machine's busy cores during each
spread run are printed too (/proc/stat): where one replica already keeps every core busy, more replicas cannot add
requests/s on that machine, only on one with cores to spare. Skipped with one line without redis-server (`just redis`).
Run: python -m bench.cluster
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from functools import partial

import aiohttp

from bench.common import Row
from bench.route import BODY, SECONDS, Load, port_of, process, register
from hearth_common.procs import free_port
from testkit.redis import RedisServer, redis_missing

REPEATS = 3
SPREAD_CONNECTIONS = 16


def busy_cores() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine so far (/proc/stat's cpu line): two readings give how many cores
    were busy between them, whoever used them."""
    with open("/proc/stat") as f:
        fields = [float(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def cores_busy_during(measure: Callable[[], Load]) -> tuple[Load, float]:
    """The load's figures and the cores the machine kept busy meanwhile (routers, backend, client and neighbours)."""
    b0, t0 = busy_cores()
    load = measure()
    b1, t1 = busy_cores()
    return load, (b1 - b0) / max(t1 - t0, 1.0) * (os.cpu_count() or 1)


def spread_load(urls: list[str], connections: int) -> Load:
    """aiohttp workers, worker i on urls[i % len(urls)] (what a balancer in front of the replicas does)."""

    async def go() -> Load:
        latencies: list[float] = []
        data = json.dumps(BODY).encode()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
            stop = time.perf_counter() + SECONDS

            async def worker(url: str) -> None:
                while (t0 := time.perf_counter()) < stop:
                    async with s.post(
                        url + "/v1/chat/completions", data=data, headers={"Content-Type": "application/json"}
                    ) as r:
                        await r.read()
                        assert r.status == 200, r.status
                    latencies.append(time.perf_counter() - t0)

            start = time.perf_counter()
            await asyncio.gather(*(worker(urls[i % len(urls)]) for i in range(connections)))
            elapsed = time.perf_counter() - start
        q = statistics.quantiles(latencies, n=100)
        return Load(len(latencies) / elapsed, q[49] * 1e3, q[98] * 1e3)

    return asyncio.run(go())


def median(loads: list[Load]) -> Load:
    return Load(*(statistics.median(getattr(x, f) for x in loads) for f in ("rps", "p50_ms", "p99_ms")))


def run(quick: bool = False) -> list[Row]:
    missing = redis_missing()
    if missing is not None:
        print(f"cluster: skipped: {missing}", flush=True)
        return []
    repeats = 1 if quick else REPEATS
    # wrk (bench/route.py) cannot spread one run over several URLs: the same aiohttp client for every figure
    print("cluster: load generator: aiohttp client in-process (competes for the same cores)", flush=True)
    backend = f"http://127.0.0.1:{free_port()}"
    alone = f"http://127.0.0.1:{free_port()}"
    replicas = [f"http://127.0.0.1:{free_port()}" for _ in range(3)]
    with ExitStack() as stack:
        redis = stack.enter_context(RedisServer())
        stack.enter_context(
            process(
                [sys.executable, "-m", "testkit.backend", "--port", port_of(backend), "--name", "a"], backend, "/_stats"
            )
        )
        for url, shared in [(alone, False), *((r, True) for r in replicas)]:
            extra = ["--shared-state", redis.url] if shared else []
            argv = [sys.executable, "-m", "route", "--port", port_of(url), "--open-admin", *extra]
            stack.enter_context(process(argv, url, "/health"))
        register(alone, backend)
        register(replicas[0], backend)  # the other replicas learn it through Redis
        time.sleep(1.5)

        measure = spread_load
        latency_targets = {"direct": [backend], "alone": [alone], "shared": [replicas[0]]}
        spread_targets = {"alone, 16 conn": [alone], **{f"{n} replicas": replicas[:n] for n in (1, 2, 3)}}
        lat: dict[str, list[Load]] = {k: [] for k in latency_targets}
        thr: dict[str, list[Load]] = {k: [] for k in spread_targets}
        cores: dict[str, list[float]] = {k: [] for k in spread_targets}
        for _ in range(repeats):  # interleaved: a neighbour's burst must not decide a ratio
            for name, urls in latency_targets.items():
                lat[name].append(measure(urls, 1))
            for name, urls in spread_targets.items():
                load, used = cores_busy_during(partial(measure, urls, SPREAD_CONNECTIONS))
                thr[name].append(load)
                cores[name].append(used)
    L = {k: median(v) for k, v in lat.items()}
    T = {k: median(v) for k, v in thr.items()}
    for k, v in {**L, **T}.items():
        print(f"cluster: {k}: {v}", flush=True)
    busy = {k: statistics.median(v) for k, v in cores.items()}
    for k, n in busy.items():  # replicas add throughput only where cores are left over
        print(f"cluster: {k}: {n:.2f} of {os.cpu_count()} cores busy", flush=True)
    d = L["direct"]
    added = {k: (L[k].p50_ms - d.p50_ms, L[k].p99_ms - d.p99_ms) for k in ("alone", "shared")}
    redis_p50 = added["shared"][0] - added["alone"][0]
    one = T["1 replicas"].rps
    rows = [
        Row("cluster", "added p50, router alone, 1 conn", added["alone"][0], "ms", None, "", None),
        Row("cluster", "added p99, router alone, 1 conn", added["alone"][1], "ms", None, "", None),
        Row("cluster", "added p50, shared state, 1 conn", added["shared"][0], "ms", None, "", None),
        Row("cluster", "added p99, shared state, 1 conn", added["shared"][1], "ms", None, "", None),
        Row("cluster", "p50 shared state minus alone", redis_p50, "ms", None, "<= 0.5 ms", redis_p50 <= 0.5),
        Row(
            "cluster",
            f"req/s router alone, {SPREAD_CONNECTIONS} conn",
            T["alone, 16 conn"].rps,
            "req/s",
            None,
            "",
            None,
        ),
    ]
    rows.append(
        Row(
            "cluster",
            f"cores busy with 1 shared replica, {SPREAD_CONNECTIONS} conn (router, backend, client, neighbours)",
            busy["1 replicas"],
            "cores",
            busy["1 replicas"] / (os.cpu_count() or 1),
            "",
            None,
        )
    )
    for n in (1, 2, 3):
        t = T[f"{n} replicas"]
        goal, met = (">= 1.5 x one replica", t.rps / one >= 1.5) if n == 2 else ("", None)
        rows.append(
            Row(
                "cluster",
                f"req/s {n} shared replica(s), {SPREAD_CONNECTIONS} conn",
                t.rps,
                "req/s",
                t.rps / one,
                goal,
                met,
            )
        )
    return rows


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row.markdown())
