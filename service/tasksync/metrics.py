"""Prometheus metrics. One registry per application, so tests can run several side by side.

Every name here is queried by the Grafana dashboard and the alerts in charts/tasksync; rename
one and those break (the chart tests scrape /metrics to check).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from importlib.metadata import version

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .collector import PAUSE_BUCKETS

# `_created` series double the exposition for no dashboard use.
disable_created_metrics()

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class LoopCounter(Collector):
    """A counter for the per-event and per-delivery hot paths, read at scrape time.

    prometheus_client's Counter takes a lock on every increment so threads can share it; only
    the event loop's thread counts events and deliveries, so a plain attribute is enough, and at
    one increment per socket per event the lock is a measurable share of a delivery.

    With `labelnames`, `labels(*values)` gives the child counting that series (look it up once
    and keep it: the lookup costs more than the increment); series appear once looked up, as
    prometheus_client's do."""

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...] = ()) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.value = 0
        self._children: dict[tuple[str, ...], LoopCounter] = {}

    def inc(self, amount: int = 1) -> None:
        self.value += amount

    def labels(self, *values: str) -> LoopCounter:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, not {values!r}")
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = LoopCounter(self.name, self.documentation)
        return child

    def collect(self) -> Iterator[Metric]:
        if not self.labelnames:
            yield CounterMetricFamily(self.name, self.documentation, value=self.value)
            return
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in self._children.items():
            family.add_metric(values, child.value)
        yield family


class LoopHistogram(Collector):
    """A histogram observed only from the event loop's thread: LoopCounter's reasoning, with
    Prometheus' bucket semantics (a value lands in every bucket whose bound is >= it)."""

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def collect(self) -> Iterator[Metric]:
        cumulative, buckets = 0, []
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        yield HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=self.sum)


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        # The process_* (CPU, memory, open files), python_info and python_gc_* series an
        # operator expects of any Python service; the registry is per app, so not the defaults.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.build_info = Gauge(
            "tasksync_build_info",
            "Always 1; `version` is the running TaskSync package's version.",
            ["version"],
            registry=r,
        )
        self.build_info.labels(version("tasksync")).set(1)
        self.connections_active = Gauge(
            "tasksync_connections_active", "Live WebSocket connections in this process.", registry=r
        )
        self.sockets_open = Gauge(
            "tasksync_sockets_open",
            "WebSocket sockets counted against max_connections_per_process: live connections and "
            "handshakes still waiting to authenticate.",
            registry=r,
        )
        self.connections_opened = Counter(
            "tasksync_connections_opened",
            "WebSocket connections accepted, by kind (new or reconnect, as the handshake says).",
            ["kind"],
            registry=r,
        )
        self.connections_closed = Counter(
            "tasksync_connections_closed",
            "WebSocket connections ended, by reason (client, slow_consumer, drain, policy, ...).",
            ["reason"],
            registry=r,
        )
        self.reconnects = Counter(
            "tasksync_reconnects",
            "Handshakes that said they replace a lost connection (client-reported reconnects).",
            registry=r,
        )
        self.reconnect_failed_attempts = Counter(
            "tasksync_reconnect_failed_attempts",
            "Failed connection attempts that clients reported before they got through.",
            registry=r,
        )
        self.handshakes_refused = Counter(
            "tasksync_handshakes_refused",
            "Handshakes refused before a connection was established, by reason.",
            ["reason"],
            registry=r,
        )
        self.transport_cutoffs = Counter(
            "tasksync_transport_cutoffs",
            "Connections the transport cut off itself, by reason: body_timeout (a request body slower than "
            "body_timeout), write_stalled (a WebSocket peer that read nothing for send_timeout, such as a ping "
            "flood or an unauthenticated socket; a stuck session send counts as connections_closed{reason=stalled}), "
            "keepalive_timeout (a WebSocket peer that left a keepalive ping unanswered for keepalive_timeout).",
            ["reason"],
            registry=r,
        )
        self.events_received = LoopCounter(
            "tasksync_events_received",
            "Valid task events ingested, by source (dapr, http, demo) and event name.",
            ("source", "event"),
        )
        r.register(self.events_received)
        self.events_duplicate = Counter(
            "tasksync_events_duplicate",
            "Events ignored because their id was already ingested within the dedupe window.",
            registry=r,
        )
        self.events_delivered = LoopCounter(
            "tasksync_events_delivered", "task_update frames written to sockets (one per socket per event)."
        )
        r.register(self.events_delivered)
        self.ingest_errors = Counter(
            "tasksync_ingest_errors",
            "Inputs rejected at ingest, by source and reason.",
            ["source", "reason"],
            registry=r,
        )
        self.dapr_responses = Counter(
            "tasksync_dapr_responses",
            "Statuses answered to Dapr (SUCCESS, RETRY, DROP), one per event or bulk entry.",
            ["status"],
            registry=r,
        )
        self.client_frames_rejected = Counter(
            "tasksync_client_frames_rejected",
            "Client frames rejected with an error frame or a close, by reason.",
            ["reason"],
            registry=r,
        )
        self.resume_outcomes = Counter(
            "tasksync_resume_outcomes",
            "Resume requests by outcome: recovered (missed events replayed) or resync (history could not cover them).",
            ["outcome"],
            registry=r,
        )
        self.events_replayed = Counter(
            "tasksync_events_replayed",
            "Events replayed from history for client resumes (handshake or resume frame), as charged to "
            "the users' replay budgets.",
            registry=r,
        )
        self.auth_failures = Counter(
            "tasksync_auth_failures",
            "Handshakes and token refreshes refused by the authenticator, by reason.",
            ["reason"],
            registry=r,
        )
        self.rate_limited = Counter(
            "tasksync_rate_limited",
            "Work refused or dropped by a rate limit: inbound client frames, outbound events, replays, "
            "publish requests.",
            ["direction"],
            registry=r,
        )
        self.plugin_errors = Counter(
            "tasksync_plugin_errors",
            "Plugin hook calls that raised or timed out, by plugin, hook and kind (error, timeout).",
            ["plugin", "hook", "kind"],
            registry=r,
        )
        self.notifications = Counter(
            "tasksync_offline_notifications",
            "Events handed to offline notifiers (users with no live connection), by plugin and outcome.",
            ["plugin", "outcome"],
            registry=r,
        )
        self.limits_generation = Gauge(
            "tasksync_limits_generation", "Generation of the limits file in force (0: built-in defaults).", registry=r
        )
        self.limits_reloads = Counter(
            "tasksync_limits_reloads",
            "Attempts to load the limits file, by outcome (applied, rejected, unreadable).",
            ["outcome"],
            registry=r,
        )
        # Leak detectors: both return to their idle values when every socket has closed.
        self.asyncio_tasks = Gauge(
            "tasksync_asyncio_tasks",
            "asyncio tasks alive in this process (one per socket, plus a writer while frames wait).",
            registry=r,
        )
        self.history_events = Gauge(
            "tasksync_history_events",
            "Events this process holds in memory for resume (embedded broker; Redis keeps history in Redis).",
            registry=r,
        )
        self.connected_users = Gauge(
            "tasksync_connected_users", "Users with at least one live connection in this process.", registry=r
        )
        # Known label values start at 0, so rate() and increase() see a series' first event
        # instead of the series appearing out of nowhere (which alerts would miss).
        for status in ("SUCCESS", "RETRY", "DROP"):
            self.dapr_responses.labels(status)
        for outcome in ("applied", "rejected", "unreadable"):
            self.limits_reloads.labels(outcome)
        for outcome in ("recovered", "resync"):
            self.resume_outcomes.labels(outcome)
        for direction in ("inbound", "outbound", "replay", "publish"):
            self.rate_limited.labels(direction)
        # Every handshake counts one of these and every connection one close: looked up once,
        # since `labels()` builds and hashes a key and takes a lock on each call.
        self.connections_opened_new = self.connections_opened.labels("new")
        self.connections_opened_reconnect = self.connections_opened.labels("reconnect")
        self._connections_closed_by_reason: dict[str, Counter] = {}
        for reason in ("body_timeout", "write_stalled"):
            self.transport_cutoffs.labels(reason)
        self.delivery_latency = LoopHistogram(
            "tasksync_delivery_latency_seconds",
            "Time from ingest of an event to the last socket write of it in this process.",
            LATENCY_BUCKETS,
        )
        r.register(self.delivery_latency)
        self.broker_lag = LoopHistogram(
            "tasksync_broker_lag_seconds",
            "Time from ingest of an event on the replica that published it to its receipt by this "
            "replica's Redis pub/sub listener (wall clocks of both replicas).",
            LATENCY_BUCKETS,
        )
        r.register(self.broker_lag)
        self.gc_pauses = Histogram(
            "tasksync_gc_pause_seconds",
            "Time the event loop stood still for a collection of Python's cyclic garbage collector, by "
            "generation (2: a full collection, paced by gc_full_collection_interval).",
            ["generation"],
            buckets=PAUSE_BUCKETS,
            registry=r,
        )
        self.broker_waiting = Gauge(
            "tasksync_broker_waiting",
            "What waits for Redis in this process: script calls in flight (publishes and reads) and "
            "watches and unwatches not yet settled.",
            registry=r,
        )

    def count_connection_closed(self, reason: str) -> None:
        # Close reasons are a fixed set of the service's own labels, so the cache stays small.
        counter = self._connections_closed_by_reason.get(reason)
        if counter is None:
            counter = self._connections_closed_by_reason[reason] = self.connections_closed.labels(reason)
        counter.inc()
