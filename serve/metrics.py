"""Prometheus metrics, in a registry of the app's own (no global registry, so several apps can coexist)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter("hearth_requests", "Requests by endpoint and status", ["endpoint", "status"], registry=r)
        self.refused = Counter(
            "hearth_requests_refused", "Requests refused (4xx) by endpoint and reason (the error code)",
            ["endpoint", "reason"], registry=r,
        )
        self.tokens = Counter("hearth_tokens_generated", "Tokens generated", registry=r)
        self.prompt_tokens = Counter("hearth_prompt_tokens", "Prompt tokens of answered requests", registry=r)
        self.cached_prompt_tokens = Counter(
            "hearth_prompt_tokens_cached", "Prompt tokens whose KV cells came from the prompt cache", registry=r)
        self.cache_ram = Gauge("hearth_prompt_cache_ram_bytes", "Host RAM held by saved sequence states", registry=r)
        self.queue_depth = Gauge("hearth_queue_depth", "Requests waiting for a slot", registry=r)
        self.active = Gauge("hearth_active_sequences", "Sequences being decoded", registry=r)
        self.ttft = Histogram(
            "hearth_time_to_first_token_seconds", "Time from request to first token", registry=r,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.tps = Histogram(
            "hearth_tokens_per_second", "Decode speed of one request", registry=r,
            buckets=(1, 5, 10, 20, 40, 80, 160, 320, 640),
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
