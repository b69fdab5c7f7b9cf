"""The running service: the components one process needs, wired together, with their lifecycle.

Routes and sessions receive a `Service` and nothing else, so what a request can touch is
spelled out here.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import msgspec

from . import redact
from .background import BackgroundTasks
from .broker import Broker, BrokerUnavailable, Delivery, create_broker
from .collector import CollectorPacing
from .connection import CloseRequest
from .events import TaskEvent
from .limits import Limits, LimitsFile
from .limits_watch import LimitsWatcher
from .metrics import Metrics
from .node import Node
from .origins import OriginPolicy
from .plugins import Plugins
from .protocol import CLOSE_SERVICE_RESTART
from .ratelimit import BucketsByKey
from .settings import Settings

log = logging.getLogger("tasksync")

# Said by the startup warning and by every refused Dapr request, so both name the fix.
DAPR_TOKEN_NOT_SET = (
    "TASKSYNC_DAPR_API_TOKEN is not set: outside development mode the Dapr routes refuse every request "
    "until it equals the Dapr sidecar's APP_API_TOKEN (the secret its dapr.io/app-token-secret annotation names)"
)

IngestOutcome = Literal["accepted", "duplicate"]


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    broker: bool
    draining: bool
    full: bool


class Service:
    """Settings, plugins, limits and metrics around a `Node`, which does the delivering."""

    def __init__(self, settings: Settings, *, broker: Broker | None = None, plugins: Plugins | None = None) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.collector = CollectorPacing(settings.gc_full_collection_interval, self.metrics.gc_pauses)
        # Per event, a series is looked up by its labels once: the lookup costs more than the count.
        self._received = functools.cache(self.metrics.events_received.labels)
        self.plugins = plugins or Plugins(settings, self.metrics)
        self.origins = OriginPolicy(settings.allowed_origins)
        self.limits_file = LimitsFile(limits=Limits(max_frame_bytes=settings.max_frame_bytes))
        limits = self.limits
        self.publish_buckets = BucketsByKey(limits.publish_requests_per_second_per_key, limits.publish_burst_per_key)
        self.replay_budgets = BucketsByKey(limits.replay_events_per_second_per_user, limits.replay_burst_per_user)
        # Client resumes reading history at once: each holds up to a history of deliveries and
        # a broker read, so a resume storm waits its turn instead of crowding out handshakes.
        self.replay_slots = asyncio.Semaphore(settings.max_concurrent_replays)
        # Sockets counted against max_connections_per_process, from their handshake to their
        # end, whether authenticated yet or still waiting for their auth frame.
        self.open_sockets = 0
        self.outbound_buckets = BucketsByKey(limits.outbound_events_per_second_per_user, limits.outbound_burst_per_user)
        self.node = Node(
            broker
            or create_broker(
                settings.broker,
                history_size=settings.history_size,
                history_ttl=settings.history_ttl,
                dedupe_window=settings.dedupe_window,
                redis_wait_replicas=settings.redis_wait_replicas,
                redis_wait_timeout=settings.redis_wait_timeout,
            ),
            self.metrics,
            outbound=self.outbound_buckets,
            admit_replay=self.admit_replay,
            heartbeat_interval=settings.heartbeat_interval,
            send_timeout=settings.send_timeout,
        )
        node = self.node
        self.metrics.asyncio_tasks.set_function(lambda: len(asyncio.all_tasks()))
        self.metrics.connected_users.set_function(lambda: node.hub.user_count)
        self.metrics.sockets_open.set_function(lambda: self.open_sockets)
        self.metrics.history_events.set_function(lambda: node.broker.held_events)
        self.metrics.broker_waiting.set_function(lambda: node.broker.waiting)
        node.broker.observe_lag = self.metrics.broker_lag.observe
        self.limits_watcher = (
            LimitsWatcher(settings.limits_file, self.apply_limits, self.metrics) if settings.limits_file else None
        )
        self._background = BackgroundTasks()

    @property
    def draining(self) -> bool:
        return self.node.draining

    @property
    def limits(self) -> Limits:
        return self.limits_file.limits

    def apply_limits(self, limits_file: LimitsFile) -> None:
        self.limits_file = limits_file
        limits = limits_file.limits
        self.publish_buckets.reconfigure(limits.publish_requests_per_second_per_key, limits.publish_burst_per_key)
        self.outbound_buckets.reconfigure(limits.outbound_events_per_second_per_user, limits.outbound_burst_per_user)
        self.replay_budgets.reconfigure(limits.replay_events_per_second_per_user, limits.replay_burst_per_user)
        self.metrics.limits_generation.set(limits_file.generation)

    async def start(self) -> None:
        # By now uvicorn and Litestar have set up their log handlers: filter them all.
        redact.install()
        self.collector.start()
        if self.settings.dev:
            log.warning(
                "DEVELOPMENT MODE: any client can claim any user with ?user_id=...; never run this in production"
            )
            if not self.settings.api_keys:
                log.warning("DEVELOPMENT MODE: POST /v1/events is open to anyone (no TASKSYNC_API_KEYS set)")
            if not self.settings.dapr_api_token:
                log.warning("DEVELOPMENT MODE: the Dapr routes are open to anyone (no TASKSYNC_DAPR_API_TOKEN set)")
        elif not self.settings.dapr_api_token:
            log.warning("%s; events Dapr delivers meanwhile are answered 403 and retried by Dapr", DAPR_TOKEN_NOT_SET)
        await self.plugins.startup()
        if self.limits_watcher is not None:
            self.limits_watcher.check()
            self._background.spawn(self.limits_watcher.run(self.settings.limits_poll_interval))
        await self.node.start()
        log.info("tasksync started: broker=%s auth=%s", self.node.broker.name, self.plugins.auth_name)

    async def stop(self) -> None:
        await self._background.cancel_all()
        await self.node.stop()
        await self.plugins.shutdown()
        self.collector.stop()

    async def drain(self) -> None:
        """Graceful shutdown: unready at once, refuse new sockets, close live ones with 1012
        spread over `drain_window`, and return once all are gone or `drain_grace` is up."""
        self.node.draining = True
        settings = self.settings
        log.info("draining %d connections over %.1fs", self.node.hub.connection_count, settings.drain_window)
        request = CloseRequest(CLOSE_SERVICE_RESTART, "service restart: reconnect and resume", "drain")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(settings.drain_grace):
                await self.node.hub.close_gradually(request, settings.drain_window)
                await self.node.hub.wait_empty()
        log.info("drained; %d connections left", self.node.hub.connection_count)

    async def ingest(self, event: TaskEvent) -> IngestOutcome:
        """Shape the toast, hand the event to the broker, and tell offline notifiers when its
        user is connected nowhere. Raises BrokerUnavailable (retry later)."""
        event = await self._with_notification(event)
        return self._settle(event, await self.node.broker.publish(event))

    async def ingest_many(self, events: Sequence[TaskEvent]) -> list[IngestOutcome | BrokerUnavailable]:
        """`ingest` for a batch, handed to the broker at once (one round trip to Redis): each
        event's outcome, or the BrokerUnavailable that kept it from being stored."""
        notifications = await self.plugins.notifications(events)
        shaped = [
            event if notification is None else msgspec.structs.replace(event, notification=notification)
            for event, notification in zip(events, notifications, strict=True)
        ]
        return [
            outcome if isinstance(outcome, BrokerUnavailable) else self._settle(event, outcome)
            for event, outcome in zip(shaped, await self.node.broker.publish_many(shaped), strict=True)
        ]

    async def _with_notification(self, event: TaskEvent) -> TaskEvent:
        notification = await self.plugins.notification(event)
        if notification is not None:
            event = msgspec.structs.replace(event, notification=notification)
        return event

    def _settle(self, event: TaskEvent, delivery: Delivery | None) -> IngestOutcome:
        """Count a published event, and tell offline notifiers when its user is connected nowhere."""
        if delivery is None:
            self.metrics.events_duplicate.inc()
            return "duplicate"
        self._received(event.source, event.event).inc()
        if delivery.listeners == 0 and self.plugins.has_offline_notifiers:
            # After the store, off the ingest path: a slow notifier never delays an acknowledgement.
            self._background.spawn(self.plugins.offline_event(event))
        return "accepted"

    def claim_socket_slot(self) -> bool:
        """Count one socket against max_connections_per_process: True if there was room (then it
        is counted until `release_socket_slot`), False if the process is full."""
        if self.full:
            return False
        self.open_sockets += 1
        return True

    def release_socket_slot(self) -> None:
        self.open_sockets -= 1

    @property
    def full(self) -> bool:
        return self.open_sockets >= self.limits.max_connections_per_process

    def admit_replay(self, user_id: str, events: int) -> bool:
        """Charge a client's resume to its user's replay budget: True if it may replay `events`
        now. A replay larger than the whole burst costs the burst, so a full budget admits
        any replay the history can produce."""
        if not events:
            return True
        if not self.replay_budgets.allow(user_id, min(events, self.limits.replay_burst_per_user)):
            return False
        self.metrics.events_replayed.inc(events)
        return True

    async def readiness(self) -> Readiness:
        broker_ok = await self.node.broker.ready()
        full = self.full
        ready = broker_ok and not self.draining and not full
        return Readiness(ready=ready, broker=broker_ok, draining=self.draining, full=full)
