"""The loop-local metrics: what a scrape of them shows."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from tasksync.metrics import LoopCounter, LoopHistogram


def scrape(*collectors) -> dict[str, float]:
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)
    samples = {}
    for line in generate_latest(registry).decode().splitlines():
        if not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_a_loop_counter_is_exposed_as_a_counter_total():
    counter = LoopCounter("things", "Things.")
    counter.inc()
    counter.inc(4)
    assert scrape(counter) == {"things_total": 5.0}


def test_a_labelled_loop_counter_shows_each_series_looked_up():
    counter = LoopCounter("things", "Things.", ("source", "event"))
    counter.labels("http", "task.created").inc()
    counter.labels("http", "task.created").inc(2)
    counter.labels("dapr", "task.deleted")
    assert scrape(counter) == {
        'things_total{event="task.created",source="http"}': 3.0,
        'things_total{event="task.deleted",source="dapr"}': 0.0,
    }
    with pytest.raises(ValueError, match="takes labels"):
        counter.labels("http")


def test_a_loop_histogram_has_prometheus_bucket_semantics():
    histogram = LoopHistogram("wait_seconds", "Waits.", (0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 1.0, 7.0):  # a value on a bound belongs to that bucket
        histogram.observe(value)
    assert scrape(histogram) == {
        'wait_seconds_bucket{le="0.1"}': 2.0,
        'wait_seconds_bucket{le="1.0"}': 4.0,
        'wait_seconds_bucket{le="+Inf"}': 5.0,
        "wait_seconds_count": 5.0,
        "wait_seconds_sum": 8.65,
    }
