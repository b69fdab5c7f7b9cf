"""The hub: this process's live connections by user, and delivery into their outboxes.

Delivery never awaits a socket. Each connection has a bounded outbox drained by its own writer
(see `session.py`), so a socket that cannot keep up fills only its own outbox and is then closed
with 1013 instead of delaying anyone else or growing memory.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from .broker import Delivery
from .metrics import Metrics
from .protocol import CLOSE_TRY_AGAIN_LATER, Ping, ResyncRequired, encode, text_frame, utc_now_iso
from .ratelimit import BucketsByKey


@dataclass(frozen=True, slots=True)
class CloseRequest:
    """Ask a connection's writer to close the socket. `label` is the metric reason."""

    code: int
    reason: str
    label: str


OutboxItem = Delivery | str | CloseRequest


class Outbox:
    """A bounded FIFO with one consumer, the connection's writer. A close request may jump the
    capacity check. It holds no buffer while empty: most connections are idle most of the time,
    and most frames never wait in an outbox at all (see `Connection.write_now`)."""

    __slots__ = ("capacity", "items")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        # None while empty.
        self.items: deque[OutboxItem] | None = None

    def __len__(self) -> int:
        return len(self.items) if self.items is not None else 0

    def offer(self, item: OutboxItem) -> bool:
        """Queue an item unless the outbox is full."""
        if self.items is None:
            self.items = deque()
        elif len(self.items) >= self.capacity:
            return False
        self.items.append(item)
        return True

    def close_with(self, request: CloseRequest) -> None:
        """Drop what is queued and make the close the next thing the writer sees. The client
        resumes from its last `seq`, so the dropped frames are not lost to it."""
        self.items = deque((request,))

    def drop_deliveries(self) -> None:
        if self.items is not None:
            kept = [item for item in self.items if not isinstance(item, Delivery)]
            self.items = deque(kept) if kept else None

    def peek(self) -> OutboxItem | None:
        return self.items[0] if self.items is not None else None

    def take_nowait(self) -> OutboxItem | None:
        items = self.items
        if items is None:
            return None
        item = items.popleft()
        if not items:
            self.items = None
        return item


_connection_ids = itertools.count(1)


class Connection:
    """Per-socket delivery state. The socket itself belongs to the session."""

    __slots__ = (
        "id", "user_id", "outbox", "closing", "sending_since", "abort", "send_now", "start_writer", "epoch",
        "last_taken_seq", "last_queued_seq", "_replaying", "_held", "_writer",
    )

    def __init__(self, user_id: str, outbox_size: int) -> None:
        self.id = f"c-{next(_connection_ids):x}"
        self.user_id = user_id
        self.outbox = Outbox(outbox_size)
        self.closing: CloseRequest | None = None
        # Loop time at which the writer's current send began (0.0: not sending). A send that
        # never finishes means the peer stopped reading; see Hub.abort_stalled.
        self.sending_since = 0.0
        # Set by the session: tear the connection down without a closing handshake.
        self.abort: Callable[[], None] | None = None
        # Set by the session when the transport can take a frame synchronously (see write_now).
        self.send_now: Callable[[str, bytes], bool] | None = None
        # Set by the session: starts the writer, a task that drains the outbox through the
        # awaitable ASGI send and ends once it is empty. A writer runs only while frames wait
        # (the transport pushes back, or a close must be sent), so an idle connection has none.
        self.start_writer: Callable[[], asyncio.Task[None]] | None = None
        self._writer: asyncio.Task[None] | None = None
        # The epoch of this connection's stream, and the newest seq its writer has taken from
        # the outbox: where a server-side catch-up resumes it from.
        self.epoch = ""
        self.last_taken_seq = 0
        # The newest seq queued or written in `epoch`. A live delivery at or below it was
        # already covered by a replay (Redis hands the hub an event after history has it).
        self.last_queued_seq = 0
        # While a resume replays history, live deliveries are held back so that nothing
        # overtakes the replay; `end_replay` releases them in order without duplicates.
        self._replaying = True
        self._held: list[Delivery] = []

    @property
    def replaying(self) -> bool:
        return self._replaying

    def enqueue(self, delivery: Delivery) -> bool:
        """Queue a live delivery; False if the outbox is full. A delivery that does not follow
        the stream's last one (another epoch, or a gap) is announced with `resync_required`."""
        if self._replaying:
            self._held.append(delivery)
            return True
        if delivery.seq <= self.last_queued_seq and delivery.epoch == self.epoch:
            return True  # already queued or sent
        jump = delivery.seq != self.last_queued_seq + 1 or delivery.epoch != self.epoch
        if jump and not self._resync_before(delivery):
            return False
        if not self.offer(delivery):
            return False
        self.last_queued_seq = delivery.seq
        return True

    def _resync_before(self, delivery: Delivery) -> bool:
        """The client cannot go on to `delivery` without missing events: Redis lost its data and
        started a new epoch, or history no longer held what a gap hid. Tell it to refetch, at the
        offset just before this delivery, from where the stream goes on without a gap. Deliveries
        still queued are dropped: the refetch covers them, and the stream's position stays one a
        server-side catch-up can resume (`last_taken_seq` in `epoch`). False if the outbox is full."""
        reason = "epoch_changed" if delivery.epoch != self.epoch else "history_gap"
        self.outbox.drop_deliveries()
        self.epoch = delivery.epoch
        self.last_taken_seq = self.last_queued_seq = delivery.seq - 1
        return self.offer(encode(ResyncRequired(reason=reason, seq=delivery.seq - 1, epoch=delivery.epoch)))

    def offer(self, item: OutboxItem) -> bool:
        """Queue a frame, then write what the transport takes at once and leave the rest to a
        writer; False if the outbox is full."""
        if not self.outbox.offer(item):
            return False
        self._wake_writer()
        return True

    def write_now(self, delivery: Delivery, wire: bytes) -> bool:
        """Write a delivery to the socket at once when that cannot overtake anything: not
        replaying, nothing queued, the writer idle, the transport accepting data. This spares
        the writer task a wake-up (and the garbage of an await chain) per frame; whatever it
        refuses goes through the outbox as before, so backpressure and stall detection stay."""
        if (
            self._replaying
            or self.send_now is None
            or self.closing is not None
            or self.outbox.items is not None
            or self._writer is not None
        ):
            return False
        if delivery.seq != self.last_queued_seq + 1 or delivery.epoch != self.epoch:
            return False  # already queued or sent, or a jump: `enqueue` drops or announces it
        if not self.send_now(delivery.frame, wire):
            return False
        self.last_taken_seq = self.last_queued_seq = delivery.seq
        return True

    def _wake_writer(self) -> None:
        if self._writer is not None or self.start_writer is None:
            return
        # Control frames at the head of the outbox (`connected`, resync notices, errors, pings)
        # go out at once when the transport takes them: for a handshake, that spares a task.
        # Deliveries and closes are the writer's, which counts and times deliveries and sends
        # the close through ASGI.
        send_now = self.send_now
        while send_now is not None and isinstance(head := self.outbox.peek(), str):
            if not send_now(head, text_frame(head)):
                break
            self.outbox.take_nowait()
        if self.outbox.items is not None:
            self._writer = self.start_writer()

    def writer_finished(self) -> None:
        """Called by the writer as it ends: the next frame queued starts another."""
        self._writer = None

    def stop_writer(self) -> asyncio.Task[None] | None:
        """The session is ending: no writer starts again. Returns the running one, if any."""
        self.start_writer = None
        writer, self._writer = self._writer, None
        return writer

    def end_replay(self, replayed_up_to: int) -> bool:
        """Release held live deliveries newer than the replay; False if the outbox overflowed.
        Held deliveries of another epoch than the one the replay's read found were handed over
        before that read: they belong to the epoch it replaced, and are dropped."""
        self._replaying = False
        self.last_queued_seq = replayed_up_to
        held, self._held = self._held, []
        return all(self.enqueue(d) for d in held if d.epoch == self.epoch and d.seq > replayed_up_to)

    def begin_replay(self) -> None:
        """Enter replay mode for a mid-connection resume. Queued deliveries are dropped: the
        replay that follows covers them, and keeping them would send them twice."""
        self._replaying = True
        self.outbox.drop_deliveries()

    def request_close(self, request: CloseRequest) -> None:
        if self.closing is None:
            self.closing = request
            self.outbox.close_with(request)
            self._wake_writer()


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
        self._by_user: dict[str, set[Connection]] = {}
        self.connection_count = 0

    @property
    def user_count(self) -> int:
        return len(self._by_user)

    def connections_of(self, user_id: str) -> frozenset[Connection]:
        return frozenset(self._by_user.get(user_id, ()))

    def add(self, conn: Connection) -> bool:
        """Register a connection; True if it is the user's first in this process."""
        conns = self._by_user.setdefault(conn.user_id, set())
        conns.add(conn)
        self.connection_count += 1
        self.metrics.connections_active.inc()
        return len(conns) == 1

    def remove(self, conn: Connection) -> bool:
        """Forget a connection; True if the user has none left in this process."""
        conns = self._by_user.get(conn.user_id)
        if conns is None or conn not in conns:
            return False
        conns.discard(conn)
        self.connection_count -= 1
        self.metrics.connections_active.dec()
        if conns:
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
        # Framed once for every socket that takes it at once (see WebSocketProtocol.send_text_now).
        wire = text_frame(delivery.frame)
        for conn in conns:
            if conn.write_now(delivery, wire):
                written += 1
            elif not conn.enqueue(delivery):
                self.close_slow_consumer(conn)
        if written:
            self.metrics.events_delivered.inc(written)
            delivery.pending_writes -= written
            if delivery.pending_writes == 0 and delivery.received_ns is not None:
                self.metrics.delivery_latency.observe((time.monotonic_ns() - delivery.received_ns) / 1e9)
        return len(conns)

    def close_slow_consumer(self, conn: Connection) -> None:
        conn.request_close(
            CloseRequest(CLOSE_TRY_AGAIN_LATER, "slow consumer: outbox full; reconnect and resume", "slow_consumer")
        )

    def broadcast_ping(self) -> None:
        frame = encode(Ping(timestamp=utc_now_iso()))
        for conns in self._by_user.values():
            for conn in conns:
                # A connection still replaying has not sent `connected` yet; it must come first.
                if conn.replaying:
                    continue
                if not conn.offer(frame):
                    self.close_slow_consumer(conn)

    def close_all(self, request: CloseRequest) -> None:
        for conns in list(self._by_user.values()):
            for conn in list(conns):
                conn.request_close(request)

    def abort_stalled(self, now: float, send_timeout: float) -> int:
        """Abort connections whose writer has been stuck in one send for `send_timeout`.

        A peer that stops reading fills the kernel and transport buffers, and then no frame,
        not even a close frame, can reach it: aborting is the only way to free the connection.
        The client sees the connection drop, reconnects and resumes without loss.
        """
        stalled = [
            conn
            for conns in self._by_user.values()
            for conn in conns
            if conn.sending_since and now - conn.sending_since > send_timeout
        ]
        for conn in stalled:
            conn.closing = CloseRequest(CLOSE_TRY_AGAIN_LATER, "stalled", "stalled")
            if conn.abort is not None:
                conn.abort()
        return len(stalled)

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
        """Ping every socket every `interval` seconds; one encoded frame for all of them."""
        while True:
            await asyncio.sleep(interval)
            self.broadcast_ping()

    async def run_stall_watch(self, send_timeout: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(1.0, send_timeout / 2))
            self.abort_stalled(loop.time(), send_timeout)
