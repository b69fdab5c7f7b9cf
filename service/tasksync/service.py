"""The running service: the components one process needs, wired together, with their lifecycle.

Routes and sessions receive a `Service` and nothing else, so what a request can touch is
spelled out here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Literal

from .auth import Authenticator, DevAuthenticator
from .broker import Broker, create_broker
from .events import TaskEvent
from .hub import CloseRequest, Hub
from .limits import Limits
from .metrics import Metrics
from .protocol import CLOSE_SERVICE_RESTART
from .settings import Settings

log = logging.getLogger("tasksync")

IngestOutcome = Literal["accepted", "duplicate"]


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    broker: bool
    draining: bool


class Service:
    def __init__(
        self,
        settings: Settings,
        *,
        broker: Broker | None = None,
        authenticator: Authenticator | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.hub = Hub(self.metrics)
        self.broker = broker or create_broker(
            settings.broker,
            history_size=settings.history_size,
            history_ttl=settings.history_ttl,
            dedupe_window=settings.dedupe_window,
        )
        self.broker.set_sink(self.hub.deliver)
        self.authenticator = authenticator or DevAuthenticator(dev_mode=settings.dev)
        self.limits = Limits(max_frame_bytes=settings.max_frame_bytes)
        self.draining = False
        self._background: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        if self.settings.dev:
            log.warning(
                "DEVELOPMENT MODE: any client can claim any user with ?user_id=...; never run this in production"
            )
            if not self.settings.api_keys:
                log.warning("DEVELOPMENT MODE: POST /v1/events is open to anyone (no TASKSYNC_API_KEYS set)")
        await self.broker.start()
        self._background.append(asyncio.create_task(self.hub.run_heartbeat(self.settings.heartbeat_interval)))
        self._background.append(asyncio.create_task(self.hub.run_stall_watch(self.settings.send_timeout)))
        log.info("tasksync started: broker=%s auth=%s", self.broker.name, self.authenticator.name)

    async def stop(self) -> None:
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._background.clear()
        await self.broker.stop()

    async def drain(self) -> None:
        """Graceful shutdown: unready at once, refuse new sockets, close live ones with 1012
        spread over `drain_window`, and return once all are gone or `drain_grace` is up."""
        self.draining = True
        settings = self.settings
        log.info("draining %d connections over %.1fs", self.hub.connection_count, settings.drain_window)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.drain_grace
        request = CloseRequest(CLOSE_SERVICE_RESTART, "service restart: reconnect and resume", "drain")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(settings.drain_grace):
                await self.hub.close_gradually(request, settings.drain_window)
        while self.hub.connection_count and loop.time() < deadline:
            await asyncio.sleep(0.05)
        log.info("drained; %d connections left", self.hub.connection_count)

    async def ingest(self, event: TaskEvent) -> IngestOutcome:
        """Hand a validated event to the broker. Raises BrokerUnavailable (retry later)."""
        delivery = await self.broker.publish(event)
        if delivery is None:
            self.metrics.events_duplicate.inc()
            return "duplicate"
        self.metrics.events_received.labels(event.source, event.event).inc()
        return "accepted"

    async def readiness(self) -> Readiness:
        broker_ok = await self.broker.ready()
        return Readiness(ready=broker_ok and not self.draining, broker=broker_ok, draining=self.draining)
