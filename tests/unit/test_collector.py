"""CollectorPacing: every collection's pause observed by generation, and full collections held
back for the interval after each, with Python's own rule still deciding when one is due."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Histogram

from tasksync.collector import HELD, PYTHON_THRESHOLDS, CollectorPacing
from tasksync.service import Service
from tasksync.settings import Settings
from tests.support.waiting import eventually


class Pacing:
    def __init__(self, min_interval: float) -> None:
        self.registry = CollectorRegistry()
        pauses = Histogram("pauses_seconds", "pauses", ["generation"], registry=self.registry)
        self.pacing = CollectorPacing(min_interval, pauses)

    def collections(self, generation: int) -> float:
        return self.registry.get_sample_value("pauses_seconds_count", {"generation": str(generation)}) or 0.0


@pytest.fixture
def isolated_collector() -> Iterator[None]:
    """The process-wide collector as Python sets it up, whatever other tests left running (a
    service would pace it too), and as it was afterwards."""
    foreign = [cb for cb in gc.callbacks if isinstance(getattr(cb, "__self__", None), CollectorPacing)]
    for callback in foreign:
        gc.callbacks.remove(callback)
    thresholds = gc.get_threshold()
    gc.set_threshold(*PYTHON_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.callbacks.extend(foreign)


@pytest.fixture
def pacing_with(isolated_collector: None) -> Iterator[type[Pacing]]:
    started: list[Pacing] = []

    class Started(Pacing):
        def __init__(self, min_interval: float) -> None:
            super().__init__(min_interval)
            self.pacing.start()
            started.append(self)

    yield Started
    for each in started:
        each.pacing.stop()


def survivors_enough_for_a_full_collection() -> list[list[object]]:
    """Tracked objects that live on, more than a quarter of what the oldest generation holds
    (Python's rule for a full collection to be due), and enough allocations for the middle
    generation to be collected the 10 times after which one is considered."""
    return [[] for _ in range(max(len(gc.get_objects()), 200_000))]


def test_each_collection_is_observed_by_generation(pacing_with):
    paced = pacing_with(0)
    gc.collect(0)
    gc.collect(1)
    gc.collect(2)
    assert [paced.collections(g) >= 1 for g in range(3)] == [True, True, True]
    assert gc.get_threshold() == PYTHON_THRESHOLDS  # interval 0: Python's own pacing


def test_without_an_interval_python_runs_full_collections_as_the_heap_grows(pacing_with):
    paced = pacing_with(0)
    gc.collect()
    before = paced.collections(2)
    kept = survivors_enough_for_a_full_collection()
    assert paced.collections(2) > before, len(kept)


def test_after_a_full_collection_the_next_waits_for_the_interval(pacing_with):
    paced = pacing_with(3600)
    gc.collect()
    assert paced.pacing.holding
    assert gc.get_threshold()[2] == HELD
    before = paced.collections(2)
    kept = survivors_enough_for_a_full_collection()
    assert paced.collections(2) == before, len(kept)
    assert paced.collections(0) > 0  # the young generations are collected as ever


async def test_the_hold_is_lifted_at_a_young_collection_once_the_interval_is_over(pacing_with):
    paced = pacing_with(0.05)
    gc.collect()
    assert gc.get_threshold()[2] == HELD

    def lifted() -> bool:
        gc.collect(0)
        return not paced.pacing.holding

    await eventually(lifted, what="the hold lifted")
    assert gc.get_threshold() == PYTHON_THRESHOLDS


def test_stop_lifts_a_hold_and_removes_the_callback(pacing_with):
    paced = pacing_with(3600)
    gc.collect()
    paced.pacing.stop()
    assert gc.get_threshold() == PYTHON_THRESHOLDS
    before = paced.collections(2)
    gc.collect()
    assert paced.collections(2) == before


@pytest.mark.usefixtures("isolated_collector")
async def test_a_service_paces_the_collector_while_it_runs():
    service = Service(Settings(dev=True, gc_full_collection_interval=3600))
    await service.start()
    try:
        gc.collect()
        assert service.collector.holding
        samples = service.metrics.registry.get_sample_value("tasksync_gc_pause_seconds_count", {"generation": "2"})
        assert samples is not None and samples >= 1
    finally:
        await service.stop()
    assert gc.get_threshold() == PYTHON_THRESHOLDS
    assert not service.collector.holding
