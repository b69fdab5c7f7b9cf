"""The hub: this process's live connections by user, and fan-out to them.

Delivery never awaits a socket: each connection writes at once or queues in its own bounded
outbox (connection.py), so a socket that cannot keep up fills only its own outbox and is then
closed with 1013 instead of delaying anyone else or growing memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

from .broker import Delivery
from .connection import SLOW_CONSUMER, CloseRequest, Connection, ConnectionState, record_written
from .metrics import Metrics
from .protocol import Ping, encode, text_frame, utc_now_iso
from .ratelimit import BucketsByKey

# The heartbeat and the stall watch walk every connection of the process. Between slices of this
# many connections the event loop gets a turn, so deliveries wait a few milliseconds at most
# rather than the whole walk: one heartbeat to 10,000 sockets held the loop for 0.2-0.4 s.
WALK_SLICE = 250


class Hub:
    def __init__(
        self,
        metrics: Metrics,
        outbound: BucketsByKey | None = None,
        on_deferred: Callable[[str, float], None] | None = None,
    ) -> None:
        self.metrics = metrics
        # Outbound events per user per second; None: unlimited.
        self.outbound = outbound
        # Users whose live deliveries are deferred until a catch-up (see `deliver`), and who
        # to tell when a user starts being deferred: (user, seconds until a token is back).
        self.deferred: set[str] = set()
        self.on_deferred = on_deferred
        # A tuple per user rather than a set: most users hold one to three connections, and an
        # empty set alone is 216 bytes; adding and removing cost O(connections of the user),
        # which max_connections_per_user bounds.
        self._by_user: dict[str, tuple[Connection, ...]] = {}
        self.connection_count = 0
        # What `wait_empty` callers wait on, set (and let go) when the last connection goes.
        self._emptied: asyncio.Event | None = None

    @property
    def user_count(self) -> int:
        return len(self._by_user)

    def connections_of(self, user_id: str) -> tuple[Connection, ...]:
        return self._by_user.get(user_id, ())

    def add(self, conn: Connection) -> bool:
        """Register a connection; True if it is the user's first in this process."""
        conns = self._by_user.get(conn.user_id, ())
        if conn in conns:
            return False
        self._by_user[conn.user_id] = (*conns, conn)
        self.connection_count += 1
        self.metrics.connections_active.inc()
        return not conns

    def remove(self, conn: Connection) -> bool:
        """Forget a connection; True if the user has none left in this process."""
        conns = self._by_user.get(conn.user_id, ())
        if conn not in conns:
            return False
        self.connection_count -= 1
        self.metrics.connections_active.dec()
        if not self.connection_count and self._emptied is not None:
            self._emptied.set()
            self._emptied = None
        rest = tuple(other for other in conns if other is not conn)
        if rest:
            self._by_user[conn.user_id] = rest
            return False
        del self._by_user[conn.user_id]
        return True

    def deliver(self, delivery: Delivery) -> int:
        """The broker's sink: queue a delivery on every connection of its user. Returns how
        many connections it was queued on.

        Past the user's outbound rate, live deliveries are deferred (and counted): the user's
        connections are caught up from history in one batch once the rate allows, in order and
        without gaps. Every deferred event is still delivered; floods arrive coalesced."""
        user_id = delivery.user_id
        conns = self._by_user.get(user_id)
        if not conns:
            return 0
        if user_id in self.deferred:
            self.metrics.rate_limited.labels("outbound").inc()
            return len(conns)
        if self.outbound is not None and not self.outbound.allow(user_id):
            self.metrics.rate_limited.labels("outbound").inc()
            self.deferred.add(user_id)
            if self.on_deferred is not None:
                self.on_deferred(user_id, self.outbound.retry_after(user_id))
            return len(conns)
        delivery.pending_writes = len(conns)
        written = 0
        # Framed once for every socket that takes it at once (see Transport.write_now).
        wire = text_frame(delivery.frame)
        for conn in conns:
            if conn.write_now(delivery, wire):
                written += 1
            elif not conn.enqueue(delivery):
                conn.request_close(SLOW_CONSUMER)
        if written:
            record_written(self.metrics, delivery, written)
        return len(conns)

    async def wait_empty(self) -> None:
        """Return once no connection is registered."""
        while self.connection_count:
            if self._emptied is None:
                self._emptied = asyncio.Event()
            await self._emptied.wait()

    def _in_slices(self) -> Iterator[list[Connection]]:
        """Every connection registered now, WALK_SLICE at a time. A connection that ends while
        the walk waits for its turn is still visited, and takes nothing more (Connection.offer)."""
        conns = [conn for conns in self._by_user.values() for conn in conns]
        for start in range(0, len(conns), WALK_SLICE):
            yield conns[start : start + WALK_SLICE]

    async def broadcast_ping(self) -> None:
        """Ping every socket: one frame, framed once, in slices (WALK_SLICE)."""
        frame = encode(Ping(timestamp=utc_now_iso()))
        wire = text_frame(frame)
        for conns in self._in_slices():
            for conn in conns:
                # A connection still replaying may not have sent `connected` yet; it must come first.
                if conn.state is ConnectionState.REPLAYING:
                    continue
                if not conn.offer_framed(frame, wire):
                    conn.request_close(SLOW_CONSUMER)
            await asyncio.sleep(0)

    def close_all(self, request: CloseRequest) -> None:
        for conns in list(self._by_user.values()):
            for conn in conns:
                conn.request_close(request)

    async def abort_stalled(self, send_timeout: float) -> int:
        """Abort connections whose writer has been stuck in one send for `send_timeout`, in
        slices (WALK_SLICE); returns how many.

        A peer that stops reading fills the kernel and transport buffers, and then no frame,
        not even a close frame, can reach it: aborting is the only way to free the connection.
        The client sees the connection drop, reconnects and resumes without loss.
        """
        clock = asyncio.get_running_loop().time
        aborted = 0
        for conns in self._in_slices():
            now = clock()
            for conn in conns:
                if conn.stalled(now, send_timeout):
                    conn.abort()
                    aborted += 1
            await asyncio.sleep(0)
        return aborted

    async def close_gradually(self, request: CloseRequest, window: float) -> None:
        """Close every connection, spread evenly over `window` seconds, so that clients do not
        all reconnect to the remaining replicas at the same instant."""
        conns = [conn for conns in self._by_user.values() for conn in conns]
        if not conns:
            return
        step = window / len(conns)
        for conn in conns:
            conn.request_close(request)
            if step:
                await asyncio.sleep(step)

    async def run_heartbeat(self, interval: float) -> None:
        """Ping every socket every `interval` seconds."""
        while True:
            await asyncio.sleep(interval)
            await self.broadcast_ping()

    async def run_stall_watch(self, send_timeout: float) -> None:
        while True:
            await asyncio.sleep(min(1.0, send_timeout / 2))
            await self.abort_stalled(send_timeout)
