"""One WebSocket connection's delivery: its state, its bounded outbox, its writer, and the
accounting of what it writes.

The hub hands a connection frames; the connection writes them to its transport. A frame goes
out at once when the transport takes it and nothing waits ahead of it (as
`websockets.broadcast()` does); otherwise it waits in the outbox, which the connection's writer
task drains through the transport's awaitable send. The writer exists only while frames wait, so
an idle connection has none. As in centrifuge, a connection owns its writer, and the transport
it writes through is its own: a `Transport` given at creation, the one interface between
TaskSync and the server underneath (transport.py implements it).

A connection that cannot keep up fills only its own outbox and is then closed with 1013; one
whose peer reads nothing at all is aborted (`abort`). Either way the client resumes from its
last `seq` without loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from .broker import Delivery
from .metrics import Metrics
from .protocol import CLOSE_TRY_AGAIN_LATER, ResyncReason, ResyncRequired, close_reason, encode, text_frame


class Transport(Protocol):
    """What TaskSync needs of a socket once it is accepted, and all it may do with it: the
    connection writes through it, the session reads through it."""

    def write_now(self, text: str, wire: bytes) -> bool:
        """Write one text frame synchronously if the socket is open and its transport takes data
        now (not pushing back); False, writing nothing, otherwise. `wire` is the same frame
        already serialized (`protocol.text_frame`), which a transport without extensions writes
        as it is: the hub frames an event once for every socket."""

    async def send_text(self, text: str) -> None:
        """Send one text frame, waiting while the transport pushes back. Raises once the peer
        is gone."""

    async def send_close(self, code: int, reason: str) -> None:
        """Send the close frame; nothing may be sent after it."""

    def abort(self) -> None:
        """Tear the connection down without a closing handshake. For a peer that reads nothing,
        the only way to free the socket: no frame, not even a close frame, can reach it."""

    async def receive(self) -> Mapping[str, Any]:
        """The next ASGI event from the client: `websocket.receive` or `websocket.disconnect`."""


class ConnectionState(enum.Enum):
    # The stream is being opened, resumed or caught up from history: live deliveries are held
    # back until the replay is queued, so none overtakes it.
    REPLAYING = "replaying"
    LIVE = "live"
    # A close was requested: the close frame is the next and last thing written.
    CLOSING = "closing"
    # The peer stopped reading and the transport was torn down: nothing can be written.
    ABORTED = "aborted"
    # The session ended: nothing is written and no writer starts again.
    ENDED = "ended"


REPLAYING = ConnectionState.REPLAYING
LIVE = ConnectionState.LIVE
CLOSING = ConnectionState.CLOSING
ABORTED = ConnectionState.ABORTED
ENDED = ConnectionState.ENDED
# States in which frames are still queued and written.
_WRITING = frozenset((REPLAYING, LIVE))


@dataclass(frozen=True, slots=True)
class CloseRequest:
    """Ask a connection to close its socket. `label` is the metric reason."""

    code: int
    reason: str
    label: str


SLOW_CONSUMER = CloseRequest(CLOSE_TRY_AGAIN_LATER, "slow consumer: outbox full; reconnect and resume", "slow_consumer")
STALLED = CloseRequest(CLOSE_TRY_AGAIN_LATER, "stalled", "stalled")

OutboxItem = Delivery | str | CloseRequest


class Outbox:
    """A bounded FIFO with one consumer, the connection's writer. It holds no buffer while
    empty: most connections are idle most of the time, and most frames never wait in an outbox
    at all (see `Connection.write_now`)."""

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

    def clear(self) -> None:
        self.items = None

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


def record_written(metrics: Metrics, delivery: Delivery, sockets: int) -> None:
    """Count a delivery written to `sockets` more sockets; the last of its sockets observes its
    latency from ingest (when it was ingested in this process)."""
    metrics.events_delivered.inc(sockets)
    delivery.pending_writes -= sockets
    if delivery.pending_writes == 0 and delivery.received_ns is not None:
        metrics.delivery_latency.observe((time.monotonic_ns() - delivery.received_ns) / 1e9)


_connection_ids = itertools.count(1)


class Connection:
    """One socket's delivery state. The socket's reading and its handshake belong to the session."""

    __slots__ = (
        "_close_timer",
        "_direct",
        "_held",
        "_state",
        "_writer",
        "close_request",
        "epoch",
        "id",
        "last_queued_seq",
        "last_taken_seq",
        "metrics",
        "outbox",
        "sending_since",
        "transport",
        "user_id",
    )

    def __init__(self, user_id: str, outbox_size: int, transport: Transport, metrics: Metrics) -> None:
        self.id = f"c-{next(_connection_ids):x}"
        self.user_id = user_id
        self.outbox = Outbox(outbox_size)
        self._writer: asyncio.Task[None] | None = None
        # A new connection's stream is not open yet: it starts out replaying.
        self.state = REPLAYING
        # Why the connection is closing or was aborted (None: still open, or the client closed).
        self.close_request: CloseRequest | None = None
        self.transport = transport
        self.metrics = metrics
        # Loop time at which the writer's current send began (0.0: not sending). A send that
        # never finishes means the peer stopped reading; see `stalled`.
        self.sending_since = 0.0
        # The epoch of this connection's stream, and the newest seq written or taken by the
        # writer: where a server-side catch-up resumes it from.
        self.epoch = ""
        self.last_taken_seq = 0
        # The newest seq queued or written in `epoch`. A live delivery at or below it was
        # already covered by a replay (Redis hands the hub an event after history has it).
        self.last_queued_seq = 0
        # Live deliveries held back while replaying; `end_replay` releases them in order. None
        # while nothing is held: most connections never hold anything, and an empty list is 56
        # bytes on each.
        self._held: list[Delivery] | None = None
        self._close_timer: asyncio.TimerHandle | None = None

    @property
    def state(self) -> ConnectionState:
        return self._state

    @state.setter
    def state(self, state: ConnectionState) -> None:
        self._state = state
        self._refresh_direct()

    def _refresh_direct(self) -> None:
        # `write_now` runs for every socket of every delivery: whether a frame may go to the
        # transport without overtaking anything (live, nothing queued, no writer) is kept in one
        # slot, refreshed wherever one of the three changes, rather than read from the outbox.
        self._direct = self._state is LIVE and self.outbox.items is None and self._writer is None

    @property
    def is_open(self) -> bool:
        """Still writing frames: neither closing nor gone."""
        return self.state in _WRITING

    @property
    def close_label(self) -> str:
        """The reason the connection ended, as connections_closed counts it."""
        return self.close_request.label if self.close_request is not None else "client"

    def enqueue(self, delivery: Delivery) -> bool:
        """Queue a live delivery; False if the outbox is full. A delivery that does not follow
        the stream's last one (another epoch, or a gap) is announced with `resync_required`."""
        state = self.state
        if state is not LIVE:
            if state is REPLAYING:
                if self._held is None:
                    self._held = []
                self._held.append(delivery)
            return True  # closing or gone: the client resumes past it
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
        reason: ResyncReason = "epoch_changed" if delivery.epoch != self.epoch else "history_gap"
        self.outbox.drop_deliveries()
        self.epoch = delivery.epoch
        self.last_taken_seq = self.last_queued_seq = delivery.seq - 1
        return self.offer(encode(ResyncRequired(reason=reason, seq=delivery.seq - 1, epoch=delivery.epoch)))

    def offer(self, item: Delivery | str) -> bool:
        """Queue a frame, then write what the transport takes at once and leave the rest to the
        writer; False if the outbox is full. Once closing, frames are dropped: nothing may follow
        the close frame, and the client resumes past them."""
        if self.state not in _WRITING:
            return True
        if not self.outbox.offer(item):
            return False
        self._wake_writer()
        return True

    def offer_framed(self, text: str, wire: bytes) -> bool:
        """`offer` for a control frame framed once for many sockets (a ping): written at once
        when nothing is queued and no writer runs, without passing through the outbox."""
        if self._direct and self.transport.write_now(text, wire):
            return True
        return self.offer(text)

    def write_now(self, delivery: Delivery, wire: bytes) -> bool:
        """Write a live delivery to the socket at once when that cannot overtake anything: live,
        nothing queued, the writer idle, the transport taking data. This spares the writer task
        a wake-up (and the garbage of an await chain) per frame; whatever it refuses goes through
        `enqueue`, so backpressure and stall detection stay."""
        if not self._direct or delivery.seq != self.last_queued_seq + 1 or delivery.epoch != self.epoch:
            return False  # already queued or sent, or a jump: `enqueue` drops or announces it
        if not self.transport.write_now(delivery.frame, wire):
            return False
        self.last_taken_seq = self.last_queued_seq = delivery.seq
        return True

    def begin_replay(self) -> None:
        """Enter replay mode for a mid-connection resume or a catch-up. Queued deliveries are
        dropped: the replay that follows covers them, and keeping them would send them twice."""
        if self.state is LIVE:
            self.state = REPLAYING
            self.outbox.drop_deliveries()

    def end_replay(self, replayed_up_to: int) -> bool:
        """Release held live deliveries newer than the replay; False if the outbox overflowed.
        Held deliveries of another epoch than the one the replay's read found were handed over
        before that read: they belong to the epoch it replaced, and are dropped."""
        held, self._held = self._held or (), None
        if self.state is not REPLAYING:
            return True
        self.state = LIVE
        self.last_queued_seq = replayed_up_to
        return all(self.enqueue(d) for d in held if d.epoch == self.epoch and d.seq > replayed_up_to)

    def request_close(self, request: CloseRequest) -> None:
        """Close the socket with `request` after whatever frame is being written; the first
        request wins."""
        if self.state in _WRITING:
            self.state = CLOSING
            self.close_request = request
            self._held = None
            self.outbox.close_with(request)
            self._wake_writer()

    def close_at(self, deadline: float | None, request: CloseRequest) -> None:
        """Close with `request` at `deadline` (a `time.time()` instant, such as a credential's
        expiry), replacing any earlier deadline; None: no deadline."""
        self._cancel_close_timer()
        if deadline is not None:
            loop = asyncio.get_running_loop()
            delay = max(0.0, deadline - time.time())
            self._close_timer = loop.call_at(loop.time() + delay, self.request_close, request)

    def _cancel_close_timer(self) -> None:
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None

    def stalled(self, now: float, send_timeout: float) -> bool:
        """Whether the writer has been stuck in one send for `send_timeout` seconds."""
        return bool(self.sending_since) and now - self.sending_since > send_timeout

    def abort(self) -> None:
        """The peer stopped reading: tear the transport down. The session then ends as for a
        peer that went away (the writer's send fails, the reader gets the disconnect)."""
        if self.state is ENDED:
            return
        self.state = ABORTED
        self.close_request = STALLED
        self._held = None
        self.outbox.clear()
        self.transport.abort()

    def end(self) -> asyncio.Task[None] | None:
        """The session is over: nothing is written any more. Returns the writer still running,
        if any, for the session to cancel and await."""
        self.state = ENDED
        self._cancel_close_timer()
        self._held = None
        self.outbox.clear()
        writer, self._writer = self._writer, None
        return writer

    def _wake_writer(self) -> None:
        if self._writer is not None:
            return
        # Control frames at the head of the outbox (`connected`, resync notices, errors, pings)
        # go out at once when the transport takes them: for a handshake, that spares a task.
        # Deliveries and closes are the writer's, which counts and times deliveries and sends
        # the close through the transport's awaitable path.
        outbox = self.outbox
        while isinstance(head := outbox.peek(), str):
            if not self.transport.write_now(head, text_frame(head)):
                break
            outbox.take_nowait()
        if outbox.items is not None:
            self._writer = asyncio.create_task(self._write())
        self._refresh_direct()

    async def _write(self) -> None:
        """Send what the outbox holds through the transport, which waits while it pushes back;
        end once the outbox is empty (the next frame queued starts another writer) or after the
        close frame."""
        outbox, transport = self.outbox, self.transport
        clock = asyncio.get_running_loop().time
        try:
            while (item := outbox.take_nowait()) is not None:
                self.sending_since = clock()
                if isinstance(item, CloseRequest):
                    # The peer may be gone already; the session's end is the same either way.
                    with contextlib.suppress(Exception):
                        await transport.send_close(item.code, close_reason(item.reason))
                    return
                if isinstance(item, Delivery):
                    self.last_taken_seq = item.seq
                    await transport.send_text(item.frame)
                    record_written(self.metrics, item, 1)
                else:
                    await transport.send_text(item)
                self.sending_since = 0.0
        finally:
            self.sending_since = 0.0
            if self._writer is asyncio.current_task():
                self._writer = None
                self._refresh_direct()
