"""Read a running service's /metrics into {(name, labels): value}."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(service) -> Samples:
    text = httpx.get(service.http + "/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(service, name: str, **labels: str) -> float:
    return samples(service).get((name, tuple(sorted(labels.items()))), 0.0)
