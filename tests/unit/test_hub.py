"""The hub and outboxes, without sockets."""

from __future__ import annotations

import asyncio

import msgspec

from tasksync.broker import Delivery
from tasksync.hub import CloseRequest, Connection, Hub, Outbox
from tasksync.metrics import Metrics
from tasksync.protocol import ResyncRequired, ServerFrame


EPOCH = "m"


def delivery(user: str, seq: int, epoch: str = EPOCH) -> Delivery:
    return Delivery(user_id=user, seq=seq, epoch=epoch, frame=f"frame-{seq}", event_id=str(seq), received_ns=1)


def drained(conn: Connection) -> list:
    items = []
    while (item := conn.outbox.take_nowait()) is not None:
        items.append(item)
    return items


def opening(user: str, size: int = 10) -> Connection:
    """A connection whose stream is being opened in EPOCH (as `open_stream` sets it)."""
    conn = Connection(user, size)
    conn.epoch = EPOCH
    return conn


def live(user: str, size: int = 10) -> Connection:
    conn = opening(user, size)
    conn.end_replay(0)
    return conn


def test_delivery_reaches_every_connection_of_the_user_and_no_other():
    hub = Hub(Metrics())
    a1, a2, b = live("a"), live("a"), live("b")
    for conn in (a1, a2, b):
        hub.add(conn)
    d = delivery("a", 1)
    hub.deliver(d)
    assert drained(a1) == [d] and drained(a2) == [d] and drained(b) == []
    assert d.pending_writes == 2


def test_add_and_remove_report_first_and_last_connection_of_a_user():
    hub = Hub(Metrics())
    a1, a2 = live("a"), live("a")
    assert hub.add(a1) is True
    assert hub.add(a2) is False
    assert hub.connection_count == 2
    assert hub.remove(a1) is False
    assert hub.remove(a2) is True
    assert hub.remove(a2) is False
    assert hub.connection_count == 0


def test_full_outbox_closes_the_slow_consumer_with_1013_and_drops_its_queue():
    hub = Hub(Metrics())
    slow, other = live("a", size=2), live("b", size=2)
    hub.add(slow)
    hub.add(other)
    for seq in (1, 2, 3):
        hub.deliver(delivery("a", seq))
    hub.deliver(delivery("b", 1))
    assert slow.closing is not None and slow.closing.code == 1013
    assert drained(slow) == [slow.closing]
    assert [d.seq for d in drained(other)] == [1]


def test_live_deliveries_wait_behind_a_replay_and_skip_what_it_covered():
    conn = opening("a")
    for seq in (3, 4, 5):
        conn.enqueue(delivery("a", seq))
    assert drained(conn) == []
    conn.outbox.offer(delivery("a", 2))
    conn.outbox.offer(delivery("a", 3))
    assert conn.end_replay(replayed_up_to=3)
    assert [d.seq for d in drained(conn)] == [2, 3, 4, 5]


def test_begin_replay_drops_queued_deliveries_but_keeps_other_frames():
    conn = live("a")
    conn.outbox.offer(delivery("a", 1))
    conn.outbox.offer("ping")
    conn.begin_replay()
    assert drained(conn) == ["ping"]


def test_pings_skip_connections_that_have_not_sent_connected_yet():
    hub = Hub(Metrics())
    fresh, ready = Connection("a", 10), live("b")
    hub.add(fresh)
    hub.add(ready)
    hub.broadcast_ping()
    assert drained(fresh) == []
    assert '"type":"ping"' in drained(ready)[0]


def test_close_all_reaches_every_connection():
    hub = Hub(Metrics())
    conns = [live("a"), live("b")]
    for conn in conns:
        hub.add(conn)
    request = CloseRequest(1012, "restart", "drain")
    hub.close_all(request)
    assert all(drained(conn) == [request] for conn in conns)


def test_an_outbox_holds_no_buffer_while_empty():
    outbox = Outbox(4)
    assert outbox.items is None
    outbox.offer("x")
    assert outbox.take_nowait() == "x"
    assert outbox.items is None and outbox.take_nowait() is None


class FakeTransport:
    """Takes frames synchronously while `open`; counts the writers a connection starts."""

    def __init__(self) -> None:
        self.open = True
        self.written: list[str] = []
        self.writers = 0

    def send_now(self, text: str, wire: bytes) -> bool:
        if self.open:
            self.written.append(text)
        return self.open

    def attach(self, conn: Connection) -> None:
        conn.send_now = self.send_now

        def start_writer():
            self.writers += 1
            return asyncio.get_running_loop().create_future()  # a writer that never runs

        conn.start_writer = start_writer


async def test_frames_the_transport_takes_need_no_writer():
    hub, conn, transport = Hub(Metrics()), opening("a"), FakeTransport()
    transport.attach(conn)
    hub.add(conn)
    conn.offer("connected")  # while replaying: control frames still go out at once
    conn.end_replay(0)
    hub.deliver(delivery("a", 1))
    hub.broadcast_ping()
    assert transport.written[:2] == ["connected", delivery("a", 1).frame]
    assert transport.written[2].startswith('{"type":"ping"')
    assert transport.writers == 0 and conn.outbox.items is None


async def test_a_writer_starts_only_when_the_transport_pushes_back_and_once():
    hub, conn, transport = Hub(Metrics()), live("a"), FakeTransport()
    transport.attach(conn)
    hub.add(conn)
    transport.open = False
    hub.deliver(delivery("a", 1))
    hub.deliver(delivery("a", 2))
    conn.offer("ping")
    assert transport.writers == 1
    assert [getattr(item, "seq", item) for item in drained(conn)] == [1, 2, "ping"]
    conn.writer_finished()
    transport.open = True
    hub.deliver(delivery("a", 3))  # the writer is gone and nothing waits: written at once
    assert transport.written == [delivery("a", 3).frame] and transport.writers == 1


async def test_a_close_is_the_writers_and_no_writer_starts_after_the_session_ends():
    conn, transport = live("a"), FakeTransport()
    transport.attach(conn)
    conn.request_close(CloseRequest(1013, "slow", "slow_consumer"))
    assert transport.writers == 1 and transport.written == []
    conn.stop_writer()
    conn.outbox.take_nowait()
    conn.offer("ping")
    assert transport.writers == 1


def test_outbound_limit_defers_the_user_until_a_catch_up_and_says_when():
    from tasksync.ratelimit import BucketsByKey

    class Clock:
        now = 0.0

        def __call__(self) -> float:
            return self.now

    told: list[tuple[str, float]] = []
    hub = Hub(Metrics(), BucketsByKey(rate=2, burst=2, clock=Clock()), on_deferred=lambda u, d: told.append((u, d)))
    conn = live("a")
    hub.add(conn)
    for seq in (1, 2, 3, 4):
        hub.deliver(delivery("a", seq))
    assert [d.seq for d in drained(conn)] == [1, 2]
    assert hub.deferred == {"a"}
    assert told == [("a", 0.5)]  # told once, with the wait for the next token


def resync_notice(item) -> ResyncRequired:
    assert isinstance(item, str), f"expected a resync_required frame, got {item!r}"
    frame = msgspec.json.decode(item, type=ServerFrame)
    assert isinstance(frame, ResyncRequired), frame
    return frame


async def test_a_delivery_of_a_new_epoch_is_announced_with_resync_required_then_the_stream_goes_on_in_it():
    hub, conn, transport = Hub(Metrics()), live("a"), FakeTransport()
    transport.attach(conn)
    hub.add(conn)
    for seq in (1, 2):
        hub.deliver(delivery("a", seq))
    # Redis lost its data: the broker hands over the new epoch from its first event.
    for seq in (1, 2):
        hub.deliver(delivery("a", seq, epoch="r2"))
    hub.deliver(delivery("a", 2, epoch="r2"))  # a repeat, as after a catch-up
    sent = transport.written + [getattr(item, "frame", item) for item in drained(conn)]
    assert sent[:2] == [delivery("a", 1).frame, delivery("a", 2).frame]
    assert resync_notice(sent[2]) == ResyncRequired(reason="epoch_changed", seq=0, epoch="r2")
    assert sent[3:] == [delivery("a", 1, "r2").frame, delivery("a", 2, "r2").frame]
    assert (conn.epoch, conn.last_queued_seq) == ("r2", 2)


def test_a_gap_is_announced_with_resync_required_at_the_offset_before_the_next_delivery():
    conn = live("a")
    conn.enqueue(delivery("a", 1))
    assert [d.seq for d in drained(conn)] == [1]
    for seq in (4, 5):
        conn.enqueue(delivery("a", seq))
    items = drained(conn)
    assert resync_notice(items[0]) == ResyncRequired(reason="history_gap", seq=3, epoch=EPOCH)
    assert [d.seq for d in items[1:]] == [4, 5]


def test_deliveries_queued_in_the_old_epoch_give_way_to_the_resync_notice():
    conn = live("a")
    for seq in (1, 2):
        conn.enqueue(delivery("a", seq))  # queued, not yet written
    conn.enqueue(delivery("a", 1, epoch="r2"))
    items = drained(conn)
    assert resync_notice(items[0]).epoch == "r2" and [(d.epoch, d.seq) for d in items[1:]] == [("r2", 1)]
    # A server-side catch-up (outbound limit) resumes from here, in the new epoch.
    assert (conn.last_taken_seq, conn.epoch) == (0, "r2")


def test_a_replay_in_a_new_epoch_drops_held_deliveries_of_the_old_one():
    conn = Connection("a", 10)
    conn.enqueue(delivery("a", 9, epoch="old"))  # handed over before the replay's read
    conn.enqueue(delivery("a", 4, epoch="new"))
    conn.epoch = "new"  # what the replay's read found
    assert conn.end_replay(replayed_up_to=3)
    assert [(d.epoch, d.seq) for d in drained(conn)] == [("new", 4)]
