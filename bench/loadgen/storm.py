"""The reconnect storm: many clients that behave like the web client, a publisher that behaves
like Dapr, and a server restarted under them.

Each client follows clients/web/src/sync-client.ts and backoff.ts: after close 1012 from an
established connection it waits a random 0-1 s and reconnects; after any other loss it retries
with backoff (1 s doubling to 30 s, each delay spread by +-20 %, at most 10 retries in a row,
the count reset by a `connected` frame). It resumes with `since`/`epoch` from the last
`task_update` it processed, or from its `connected` frame when it did not resume.

The publisher sends events at a fixed rate and retries a batch until the server takes it, with
the same ids, as Dapr redelivers: an event is only counted as published once acknowledged. An
event is lost when it was acknowledged and never reached its user's client.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from typing import Any
from urllib.parse import urlencode

import httpx
from picows import WSListener, WSMsgType, WSTransport, ws_connect

from ..shape import compact_json
from .common import cpu_seconds, source_address
from .publish import payload

INITIAL_DELAY = 1.0
MAX_DELAY = 30.0
JITTER = 0.2
MAX_ATTEMPTS = 10
RESTART_JITTER = 1.0
# The heartbeat interval a client assumes (the server's default, which the storm's server keeps).
HEARTBEAT_INTERVAL = 25.0
# Close codes after which the web client stops instead of retrying.
STOP_CODES = {1000, 1003, 1008, 1009, 4003}
ABNORMAL = 1006


def backoff_delay(retry: int) -> float:
    nominal = min(INITIAL_DELAY * 2 ** max(0, retry - 1), MAX_DELAY)
    return nominal * (1 + JITTER * (2 * random.random() - 1))


class _Client:
    def __init__(self, storm: Storm, index: int, user: str) -> None:
        self.storm = storm
        self.index = index
        self.user = user
        self.position: tuple[int, str] | None = None
        self.confirmed = False
        self.had_connection = False
        self.retry = 0
        self.failed_attempts = 0
        self.received: set[str] = set()
        self.duplicates = 0
        self.back_ns: int | None = None
        self.resumed = False
        self.gave_up = False
        # connecting, open (upgraded, no `connected` frame yet), connected, waiting (a retry
        # timer runs), gave_up: where a client that is not back got stuck.
        self.state = "waiting"
        self.last_frame = 0.0

    def url(self) -> str:
        query: dict[str, Any] = {"user_id": self.user}
        if self.position is not None:
            query["since"], query["epoch"] = self.position
        if self.had_connection:
            query["reconnect"] = 1
        if self.had_connection or self.failed_attempts:
            query["attempts"] = self.failed_attempts
        return f"{self.storm.url}?{urlencode(query)}"

    def start(self) -> None:
        # The storm holds the task: the event loop keeps only a weak reference to it.
        task = asyncio.ensure_future(self.attempt())
        self.storm.attempts.add(task)
        task.add_done_callback(self.storm.attempts.discard)

    async def attempt(self) -> None:
        if self.storm.stopped:
            return
        self.state = "connecting"
        try:
            transport, listener = await ws_connect(
                lambda: _Listener(self),
                self.url(),
                local_addr=source_address(self.index),
                websocket_handshake_timeout=10,
            )
        except (Exception, asyncio.CancelledError) as exc:
            # Any failure to connect is a failed attempt, as in the browser. picows raises
            # CancelledError when the peer drops the connection mid-handshake; only a
            # cancellation of this task itself (none is ever requested) would be ours.
            current = asyncio.current_task()
            if isinstance(exc, asyncio.CancelledError) and current is not None and current.cancelling():
                raise
            self.storm.connect_errors[type(exc).__name__] += 1
            self.failed_attempts += 1
            self.schedule_retry()
            return
        if transport.is_disconnected and not (isinstance(listener, _Listener) and listener.upgraded):
            # picows returns normally, without calling the listener, when the server drops the
            # connection before answering the upgrade (a server shutting down does). When it
            # answered (and closed at once, as a draining server does with 1012), the listener's
            # on_ws_disconnected reports the loss: retrying here too would run two connections.
            self.storm.connect_errors["closed before upgrade"] += 1
            self.failed_attempts += 1
            self.schedule_retry()

    def on_message(self, message: dict[str, Any]) -> None:
        self.last_frame = time.monotonic()
        kind = message.get("type")
        if kind == "connected":
            self.state = "connected"
            self.confirmed = True
            self.had_connection = True
            self.retry = self.failed_attempts = 0
            if not message["resumed"]:
                self.position = (message["seq"], message["epoch"])
            if self.storm.mark_ns and self.back_ns is None:
                self.back_ns = time.monotonic_ns()
                self.resumed = message["resumed"]
        elif kind == "task_update":
            if message["id"] in self.received:
                self.duplicates += 1
            self.received.add(message["id"])
            self.position = (message["seq"], message["epoch"])
        elif kind == "resync_required":
            self.storm.resyncs += 1
            self.position = (message["seq"], message["epoch"])

    def on_lost(self, code: int) -> None:
        confirmed, self.confirmed = self.confirmed, False
        if not confirmed:
            self.failed_attempts += 1
        if self.storm.stopped:
            return
        self.state = "waiting"
        if code in STOP_CODES:
            self.gave_up = True
            self.state = "gave_up"
        elif code == 1012 and confirmed:
            asyncio.get_running_loop().call_later(random.random() * RESTART_JITTER, self.start)
        else:
            self.schedule_retry()

    def schedule_retry(self) -> None:
        self.state = "waiting"
        if self.retry >= MAX_ATTEMPTS:
            self.gave_up = True
            self.state = "gave_up"
            return
        self.retry += 1
        asyncio.get_running_loop().call_later(backoff_delay(self.retry), self.start)


class _Listener(WSListener):
    def __init__(self, client: _Client) -> None:
        self.client = client
        self.code = ABNORMAL
        self.upgraded = False

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.upgraded = True
        self.client.state = "open"
        self.client.last_frame = time.monotonic()
        self.client.storm.transports[self.client.index] = transport

    def on_ws_frame(self, transport: WSTransport, frame) -> None:
        if frame.msg_type == WSMsgType.TEXT:
            self.client.on_message(json.loads(frame.get_payload_as_bytes()))
        elif frame.msg_type == WSMsgType.CLOSE:
            self.code = int(frame.get_close_code())
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.client.storm.transports.pop(self.client.index, None)
        self.client.on_lost(self.code)


class Storm:
    def __init__(self) -> None:
        self.url = ""
        self.clients: list[_Client] = []
        self.transports: dict[int, WSTransport] = {}
        self.attempts: set[asyncio.Future[None]] = set()
        self.mark_ns = 0
        self.cpu_at_mark = 0.0
        self.resyncs = 0
        self.stopped = False
        self.acked: dict[str, set[str]] = {}
        self.publisher: asyncio.Task[None] | None = None
        self.watchdog: asyncio.Task[None] | None = None
        self.publish_failures = 0
        self.connect_errors: Counter[str] = Counter()

    async def start(self, command: dict[str, Any]) -> dict[str, Any]:
        """Connect `clients` clients (one user each), then start publishing `rate` events/s."""
        self.url = command["url"]
        self.clients = [_Client(self, i, f"s{i}") for i in range(command["clients"])]
        started = time.monotonic()
        limit = asyncio.Semaphore(200)

        async def first(client: _Client) -> None:
            async with limit:
                await client.attempt()

        await asyncio.gather(*(first(client) for client in self.clients))
        deadline = time.monotonic() + command.get("timeout", 120)
        while sum(c.had_connection for c in self.clients) < len(self.clients) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self.publisher = asyncio.create_task(self._publish(command["publish_url"], command["rate"]))
        self.watchdog = asyncio.create_task(self._watch_heartbeats())
        return {"connected": sum(c.had_connection for c in self.clients), "seconds": time.monotonic() - started}

    def mark(self) -> dict[str, Any]:
        """The restart begins now: from here a `connected` frame counts as being back."""
        self.mark_ns = time.monotonic_ns()
        self.cpu_at_mark = cpu_seconds()
        return {"mark_ns": self.mark_ns}

    async def finish(self, command: dict[str, Any]) -> dict[str, Any]:
        """Wait until every client is back (or `timeout`), stop publishing, give in-flight events
        `settle` seconds to arrive, and count what came back, when, and what was lost."""
        deadline = time.monotonic() + command["timeout"]
        while time.monotonic() < deadline and not all(c.back_ns or c.gave_up for c in self.clients):
            await asyncio.sleep(0.05)
        assert self.publisher is not None and self.watchdog is not None
        self.publisher.cancel()
        self.watchdog.cancel()
        await asyncio.gather(self.publisher, self.watchdog, return_exceptions=True)
        settle = time.monotonic() + command["settle"]
        while time.monotonic() < settle and self._missing():
            await asyncio.sleep(0.1)
        self.stopped = True
        back = sorted((c.back_ns - self.mark_ns) / 1e9 for c in self.clients if c.back_ns)
        resumed = sorted((c.back_ns - self.mark_ns) / 1e9 for c in self.clients if c.back_ns and c.resumed)
        clients = len(self.clients)

        def time_to(fraction: float, times: list[float]) -> float | None:
            needed = max(1, int(fraction * clients + 0.9999))
            return times[needed - 1] if len(times) >= needed else None

        for transport in list(self.transports.values()):
            transport.disconnect()
        return {
            "clients": clients,
            "back": len(back),
            "resumed": len(resumed),
            "resyncs": self.resyncs,
            "gave_up": sum(c.gave_up for c in self.clients),
            "seconds_to_50_resumed": time_to(0.5, resumed),
            "seconds_to_99_resumed": time_to(0.99, resumed),
            "seconds_to_all_resumed": time_to(1.0, resumed),
            "not_back": dict(Counter(c.state for c in self.clients if not c.back_ns)),
            "connect_errors": dict(self.connect_errors),
            "published": sum(len(ids) for ids in self.acked.values()),
            "lost": self._missing(),
            "duplicates": sum(c.duplicates for c in self.clients),
            "publish_retries": self.publish_failures,
            "cpu_s": cpu_seconds() - self.cpu_at_mark,
        }

    def _missing(self) -> int:
        """Acknowledged events that a client which is back has not received. A client that
        never came back is counted in `not_back`: its events wait in history, not lost."""
        back = {c.user: c.received for c in self.clients if c.back_ns}
        return sum(len(ids - back[user]) for user, ids in self.acked.items() if user in back)

    async def _watch_heartbeats(self) -> None:
        """The web client's watchdog: a socket silent for twice the heartbeat interval is dead."""
        while True:
            await asyncio.sleep(1)
            silent = time.monotonic() - 2 * HEARTBEAT_INTERVAL
            for client in self.clients:
                transport = self.transports.get(client.index)
                if transport is not None and client.last_frame < silent:
                    client.last_frame = time.monotonic()
                    transport.disconnect()

    async def _publish(self, base: str, rate: float) -> None:
        tick = 0.05
        per_tick = max(1, round(rate * tick))
        n = 0
        async with httpx.AsyncClient(timeout=5) as client:
            while True:
                events = [payload(random.choice(self.clients).user, n + i) for i in range(per_tick)]
                n += per_tick
                body = compact_json(events).encode()
                while True:
                    try:
                        response = await client.post(
                            f"{base}/v1/events", content=body, headers={"content-type": "application/json"}
                        )
                        if response.status_code == 202:
                            break
                    except httpx.HTTPError:
                        pass
                    # Not acknowledged: send the same ids again, as Dapr redelivers.
                    self.publish_failures += 1
                    await asyncio.sleep(0.1)
                for event in events:
                    self.acked.setdefault(event["user_id"], set()).add(event["id"])
                await asyncio.sleep(tick)
