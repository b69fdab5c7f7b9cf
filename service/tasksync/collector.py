"""Pacing of Python's cyclic garbage collector, and its pauses as a metric.

A full collection stops the event loop to walk every live object: about 85 per socket, so with
5,000 sockets 0.15-0.25 s each. Python starts one whenever the objects that survived into its
oldest generation since the last one reach a quarter of those already there. That is rare while
the number of sockets holds, and constant while it grows: as 5,000 sockets reconnect after a
restart, 8 or 9 of them, 1.3-1.9 s of the storm (docs/performance.md, "The reconnect storm").

Sockets do not need them: a closed connection is freed by reference counting
(`transport.release`), so a full collection finds only what cycles other code leaves. So after one,
`gc_full_collection_interval` holds the next back for that many seconds; Python's own rule still
decides when one is due. The hold is lifted from the collector's own callback, at the first
collection of a younger generation after the interval: no task, no timer.
"""

from __future__ import annotations

import contextlib
import gc
import time

from prometheus_client import Histogram

# Python's thresholds when TaskSync was imported: the third is the number of collections of the
# middle generation after which a full collection is considered, and what a hold restores.
PYTHON_THRESHOLDS = gc.get_threshold()
# A third threshold no count of middle-generation collections reaches: no full collection is due.
HELD = 2**31 - 1

PAUSE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class CollectorPacing:
    """Installed into `gc.callbacks` between `start` and `stop`: observes every collection's pause
    in `pauses` (by generation) and, with `min_interval` > 0, holds full collections back for
    `min_interval` seconds after each. The callback runs in whichever thread allocated, so it only
    touches the collector's settings and a thread-safe histogram."""

    def __init__(self, min_interval: float, pauses: Histogram) -> None:
        self.min_interval = min_interval
        self._pauses = [pauses.labels(str(generation)) for generation in range(3)]
        self._started = 0.0
        self._held_since: float | None = None

    @property
    def holding(self) -> bool:
        return self._held_since is not None

    def start(self) -> None:
        gc.callbacks.append(self._on_collection)

    def stop(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._on_collection)
        if self._held_since is not None:
            self._lift()

    def _on_collection(self, phase: str, info: dict[str, int]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._started = now
            return
        generation = info["generation"]
        self._pauses[generation].observe(now - self._started)
        if not self.min_interval:
            return
        if generation == 2:
            self._held_since = now
            young, middle, _ = gc.get_threshold()
            gc.set_threshold(young, middle, HELD)
        elif self._held_since is not None and now - self._held_since >= self.min_interval:
            self._lift()

    def _lift(self) -> None:
        self._held_since = None
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, PYTHON_THRESHOLDS[2])
