"""Prometheus metrics, in a registry of the app's own (no process-wide default registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from hearth_common.prometheus import CONTENT_TYPE, render

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
ADDED_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)


class Metrics:
    content_type = CONTENT_TYPE

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "route_requests",
            "Routed requests by backend, model and final status",
            ["backend", "model", "status"],
            registry=self.registry,
        )
        self.retries = Counter(
            "route_retries", "Requests retried on another backend", ["model"], registry=self.registry
        )
        self.ejections = Counter("route_ejections", "Passive ejections", ["backend"], registry=self.registry)
        self.failures = Counter(
            "route_backend_failures",
            "Backend failures (connection, timeout, 5xx, in-band error)",
            ["backend", "kind"],
            registry=self.registry,
        )
        self.upstream_seconds = Histogram(
            "route_upstream_seconds",
            "Backend time to response headers",
            ["backend"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.added_seconds = Histogram(
            "route_added_seconds",
            "Time the router adds to a non-streamed request",
            buckets=ADDED_BUCKETS,
            registry=self.registry,
        )
        self.healthy = Gauge(
            "route_backend_healthy", "1 when the backend takes traffic", ["backend"], registry=self.registry
        )
        self.active = Gauge("route_backend_active", "Requests in flight", ["backend"], registry=self.registry)

    def render(self) -> bytes:
        return render(self.registry)
