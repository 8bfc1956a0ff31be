"""What every program's /metrics shares: prometheus_client's own content type, and no `_created` series.

`_created` series (one per counter and histogram, a timestamp each) are read by no dashboard built for
llama.cpp's server or vLLM and double the lines a scrape carries; prometheus_client's switch for them is
process-wide, so it is thrown here, where every metrics module imports from.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, disable_created_metrics, generate_latest

CONTENT_TYPE = CONTENT_TYPE_LATEST
disable_created_metrics()


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
