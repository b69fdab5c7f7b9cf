"""`webhook`: POST each event of an offline user to a URL, signed with HMAC-SHA256.

Settings (environment): TASKSYNC_WEBHOOK_URL (required), TASKSYNC_WEBHOOK_SECRET (required),
TASKSYNC_WEBHOOK_RETRIES (5), TASKSYNC_WEBHOOK_BACKOFF (0.5 s, doubling), TASKSYNC_WEBHOOK_QUEUE (1000).

The request: JSON body `{"id", "event", "user_id", "task", "occurred_at"}`, headers
`X-TaskSync-Timestamp: <unix seconds>` and `X-TaskSync-Signature: sha256=<hex>`, the HMAC of
`<timestamp>.<body>` with the secret; the receiver recomputes it and rejects stale timestamps,
which stops replays. 5xx, 429 and network errors are retried with backoff; 4xx are not.
Sending happens in a worker so the hook returns at once; when the queue is full the event is
dropped and counted (outcome `dropped`), never silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time

import httpx
import msgspec

from tasksync import hookimpl
from tasksync.events import TaskEvent
from tasksync.plugins import PluginContext, PluginError

log = logging.getLogger("tasksync.webhook")
STASH = "webhook"


class WebhookSettings(msgspec.Struct, kw_only=True):
    url: str = ""
    secret: str = ""
    retries: int = 5
    backoff: float = 0.5
    queue: int = 1000
    timeout: float = 5.0


class WebhookBody(msgspec.Struct):
    id: str
    event: str
    user_id: str
    task: dict
    occurred_at: str


def signature(secret: str, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class _Sender:
    def __init__(self, settings: WebhookSettings, ctx: PluginContext) -> None:
        self.settings = settings
        self.metrics = ctx.metrics
        self.queue: asyncio.Queue[TaskEvent] = asyncio.Queue(settings.queue)
        self.client = httpx.AsyncClient(timeout=settings.timeout)
        self.worker = asyncio.create_task(self._run())

    def offer(self, event: TaskEvent) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.metrics.notifications.labels("webhook", "dropped").inc()
            log.warning("webhook queue full; dropped event %s", event.id)

    async def _run(self) -> None:
        while True:
            event = await self.queue.get()
            outcome = await self._deliver(event)
            self.metrics.notifications.labels("webhook", outcome).inc()

    async def _deliver(self, event: TaskEvent) -> str:
        body = msgspec.json.encode(WebhookBody(event.id, event.event, event.user_id, event.task, event.occurred_at))
        delay = self.settings.backoff
        for attempt in range(self.settings.retries + 1):
            timestamp = str(int(time.time()))
            headers = {
                "content-type": "application/json",
                "x-tasksync-timestamp": timestamp,
                "x-tasksync-signature": signature(self.settings.secret, timestamp, body),
            }
            try:
                response = await self.client.post(self.settings.url, content=body, headers=headers)
                if response.status_code < 300:
                    return "sent"
                if response.status_code < 500 and response.status_code != 429:
                    log.warning("webhook refused event %s: HTTP %d", event.id, response.status_code)
                    return "refused"
            except httpx.HTTPError as exc:
                log.info("webhook attempt %d for %s failed: %s", attempt + 1, event.id, exc)
            if attempt < self.settings.retries:
                await asyncio.sleep(delay)
                delay *= 2
        log.warning("webhook gave up on event %s after %d attempts", event.id, self.settings.retries + 1)
        return "failed"

    async def close(self) -> None:
        self.worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.worker
        await self.client.aclose()


@hookimpl
def tasksync_startup(ctx: PluginContext) -> None:
    settings = ctx.plugin_settings("TASKSYNC_WEBHOOK_", WebhookSettings)
    if not settings.url or not settings.secret:
        raise PluginError("the webhook notifier needs TASKSYNC_WEBHOOK_URL and TASKSYNC_WEBHOOK_SECRET")
    ctx.stash[STASH] = _Sender(settings, ctx)


@hookimpl
async def tasksync_shutdown(ctx: PluginContext) -> None:
    await ctx.stash.pop(STASH).close()


@hookimpl
def tasksync_offline_event(ctx: PluginContext, event: TaskEvent) -> None:
    ctx.stash[STASH].offer(event)
