"""Prometheus metrics of one model server, in a registry of the app's own (several apps can coexist).

Every series carries a `model` label (the served model's name), so one dashboard shows every model of a stack.
The series dashboards built for vLLM and llama.cpp's server read have a counterpart here (docs/API.md maps
them): requests running and waiting, prompt and generated tokens, time to first token, inter-token latency and
the whole request's latency.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from hearth_common.prometheus import render

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
TOKEN_GAP_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5)
REQUEST_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)


@dataclass
class Metrics:
    model: str = ""
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r, m = self.registry, self.model
        self._requests = Counter(
            "hearth_requests", "Requests by endpoint and status", ["model", "endpoint", "status"], registry=r
        )
        self._refused = Counter(
            "hearth_requests_refused",
            "Requests refused (4xx) by endpoint and reason (the error code)",
            ["model", "endpoint", "reason"],
            registry=r,
        )
        # The rest are bound to this server's model once: the hot path pays no label lookup.
        self.running = Gauge("hearth_requests_running", "Requests being decoded", ["model"], registry=r).labels(m)
        self.waiting = Gauge(
            "hearth_requests_waiting", "Requests waiting for a sequence", ["model"], registry=r
        ).labels(m)
        self.prompt_tokens = Counter(
            "hearth_prompt_tokens", "Prompt tokens of answered requests", ["model"], registry=r
        ).labels(m)
        self.cached_prompt_tokens = Counter(
            "hearth_prompt_tokens_cached",
            "Prompt tokens whose KV cells came from the prompt cache",
            ["model"],
            registry=r,
        ).labels(m)
        self.tokens = Counter("hearth_generation_tokens", "Tokens generated", ["model"], registry=r).labels(m)
        self.cache_ram = Gauge(
            "hearth_prompt_cache_ram_bytes", "Host RAM held by saved sequence states", ["model"], registry=r
        ).labels(m)
        self._disk_hits = Counter(
            "hearth_prompt_cache_disk_hits", "Prompts whose cached prefix was restored from disk", ["model"], registry=r
        ).labels(m)
        self._disk_misses = Counter(
            "hearth_prompt_cache_disk_misses",
            "Prompts that found no cached prefix in the KV cells, host RAM or on disk",
            ["model"],
            registry=r,
        ).labels(m)
        self._disk_written_bytes = Counter(
            "hearth_prompt_cache_disk_written_bytes", "Bytes of saved states written to disk", ["model"], registry=r
        ).labels(m)
        self._disk_read_bytes = Counter(
            "hearth_prompt_cache_disk_read_bytes", "Bytes of saved states restored from disk", ["model"], registry=r
        ).labels(m)
        self._disk_dropped_files = Counter(
            "hearth_prompt_cache_disk_dropped",
            "Saved-state files dropped unread (damaged, truncated, or another model's)",
            ["model"],
            registry=r,
        ).labels(m)
        self.disk_bytes = Gauge(
            "hearth_prompt_cache_disk_bytes", "Disk held by this model's saved states", ["model"], registry=r
        ).labels(m)
        self._disk_restore = Histogram(
            "hearth_prompt_cache_disk_restore_seconds",
            "Time to read, check and restore one saved state from disk",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        ).labels(m)
        self.ttft = Histogram(
            "hearth_time_to_first_token_seconds",
            "Time from request to first token",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        ).labels(m)
        self.itl = Histogram(
            "hearth_inter_token_latency_seconds",
            "Time between two tokens of one request",
            ["model"],
            buckets=TOKEN_GAP_BUCKETS,
            registry=r,
        ).labels(m)
        self.e2e = Histogram(
            "hearth_e2e_request_latency_seconds",
            "Time from request to its last token",
            ["model"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        ).labels(m)
        self.tps = Histogram(
            "hearth_tokens_per_second",
            "Decode speed of one request",
            ["model"],
            buckets=(1, 5, 10, 20, 40, 80, 160, 320, 640),
            registry=r,
        ).labels(m)

    def request(self, endpoint: str, status: int | str) -> None:
        self._requests.labels(self.model, endpoint, str(status)).inc()

    def refused(self, endpoint: str, reason: str) -> None:
        self._refused.labels(self.model, endpoint, reason).inc()

    # -- the disk tier's observer (serve/engine/disk_cache.py DiskObserver); called from the engine's threads

    def disk_hit(self, nbytes: int, seconds: float) -> None:
        self._disk_hits.inc()
        self._disk_read_bytes.inc(nbytes)
        self._disk_restore.observe(seconds)

    def disk_miss(self) -> None:
        self._disk_misses.inc()

    def disk_written(self, nbytes: int) -> None:
        self._disk_written_bytes.inc(nbytes)

    def disk_dropped(self, reason: str) -> None:
        self._disk_dropped_files.inc()

    def disk_used(self, nbytes: int) -> None:
        self.disk_bytes.set(nbytes)

    def render(self) -> bytes:
        return render(self.registry)
