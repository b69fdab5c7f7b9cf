"""Prometheus metrics. One registry per application, so tests can run several side by side.

Every name here is queried by the Grafana dashboard and the alerts in charts/tasksync; rename
one and those break (the chart tests scrape /metrics to check).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

# `_created` series double the exposition for no dashboard use.
disable_created_metrics()

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.connections_active = Gauge(
            "tasksync_connections_active", "Live WebSocket connections in this process.", registry=r
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
        self.events_received = Counter(
            "tasksync_events_received",
            "Valid task events ingested, by source (dapr, http, demo) and event name.",
            ["source", "event"],
            registry=r,
        )
        self.events_duplicate = Counter(
            "tasksync_events_duplicate",
            "Events ignored because their id was already ingested within the dedupe window.",
            registry=r,
        )
        self.events_delivered = Counter(
            "tasksync_events_delivered",
            "task_update frames written to sockets (one per socket per event).",
            registry=r,
        )
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
        self.auth_failures = Counter(
            "tasksync_auth_failures",
            "Handshakes and token refreshes refused by the authenticator, by reason.",
            ["reason"],
            registry=r,
        )
        self.rate_limited = Counter(
            "tasksync_rate_limited",
            "Work refused or dropped by a rate limit: inbound client frames, outbound events, publish requests.",
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
            "tasksync_asyncio_tasks", "asyncio tasks alive in this process (one writer per socket).", registry=r
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
        for direction in ("inbound", "outbound", "publish"):
            self.rate_limited.labels(direction)
        for kind in ("new", "reconnect"):
            self.connections_opened.labels(kind)
        self.delivery_latency = Histogram(
            "tasksync_delivery_latency_seconds",
            "Time from ingest of an event to the last socket write of it in this process.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
