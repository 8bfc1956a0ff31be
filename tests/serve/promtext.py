"""Read /metrics text with prometheus_client's own parser (what a Prometheus scrape reads)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the series `name` whose labels include `labels` (the `model` label may be left out);
    None when there is none."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and labels.items() <= s.labels.items():
                return float(s.value)
    return None
