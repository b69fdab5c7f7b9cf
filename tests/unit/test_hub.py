"""The hub, connections and their outboxes, without sockets.

A connection's writer task runs only once a test awaits: tests that look at an outbox do so
before awaiting, and give the connection a transport that is not writable, so every frame waits
there."""

from __future__ import annotations

import asyncio

import msgspec

from tasksync.broker import Delivery
from tasksync.connection import ABORTED, CLOSING, CloseRequest, Connection, Outbox
from tasksync.hub import WALK_SLICE, Hub
from tasksync.metrics import Metrics
from tasksync.protocol import ResyncRequired, ServerFrame
from tests.support.recording_transport import RecordingTransport
from tests.support.waiting import eventually, turns_of_the_loop

EPOCH = "m"


def delivery(user: str, seq: int, epoch: str = EPOCH) -> Delivery:
    return Delivery(user_id=user, seq=seq, epoch=epoch, frame=f"frame-{seq}", event_id=str(seq), received_ns=1)


def drained(conn: Connection) -> list:
    items = []
    while (item := conn.outbox.take_nowait()) is not None:
        items.append(item)
    return items


def opening(user: str, size: int = 10, transport: RecordingTransport | None = None) -> Connection:
    """A connection whose stream is being opened in EPOCH (as `Node.open_stream` sets it)."""
    conn = Connection(user, size, transport or RecordingTransport(writable=False), Metrics())
    conn.epoch = EPOCH
    return conn


def live(user: str, size: int = 10, transport: RecordingTransport | None = None) -> Connection:
    conn = opening(user, size, transport)
    conn.end_replay(0)
    return conn


def hub_with_live(transport: RecordingTransport) -> tuple[Hub, Connection]:
    """A hub holding one live connection of user "a" on `transport`."""
    hub, conn = Hub(Metrics()), live("a", transport=transport)
    hub.add(conn)
    return hub, conn


def writer_tasks() -> set[asyncio.Task]:
    return asyncio.all_tasks() - {asyncio.current_task()}


async def test_delivery_reaches_every_connection_of_the_user_and_no_other():
    hub = Hub(Metrics())
    a1, a2, b = live("a"), live("a"), live("b")
    for conn in (a1, a2, b):
        hub.add(conn)
    d = delivery("a", 1)
    hub.deliver(d)
    assert drained(a1) == [d] and drained(a2) == [d] and drained(b) == []
    assert d.pending_writes == 2


async def test_add_and_remove_report_first_and_last_connection_of_a_user():
    hub = Hub(Metrics())
    a1, a2 = live("a"), live("a")
    assert hub.add(a1) is True
    assert hub.add(a2) is False
    assert hub.connection_count == 2
    assert hub.remove(a1) is False
    assert hub.remove(a2) is True
    assert hub.remove(a2) is False
    assert hub.connection_count == 0


async def test_wait_empty_returns_on_the_turn_the_last_connection_goes():
    hub = Hub(Metrics())
    a, b = live("a"), live("b")
    hub.add(a)
    hub.add(b)
    waiters = [asyncio.ensure_future(hub.wait_empty()) for _ in range(2)]
    hub.remove(a)
    await turns_of_the_loop(3)
    assert not any(waiter.done() for waiter in waiters)
    hub.remove(b)
    hub.add(a)  # back before the waiters ran: not empty after all
    await turns_of_the_loop(3)
    assert not any(waiter.done() for waiter in waiters)
    hub.remove(a)
    await turns_of_the_loop(3)
    assert all(waiter.done() for waiter in waiters)
    await asyncio.wait_for(hub.wait_empty(), 1)


async def test_full_outbox_closes_the_slow_consumer_with_1013_and_drops_its_queue():
    hub = Hub(Metrics())
    slow, other = live("a", size=2), live("b", size=2)
    hub.add(slow)
    hub.add(other)
    for seq in (1, 2, 3):
        hub.deliver(delivery("a", seq))
    hub.deliver(delivery("b", 1))
    assert slow.state is CLOSING and slow.close_request is not None and slow.close_request.code == 1013
    assert drained(slow) == [slow.close_request]
    assert [d.seq for d in drained(other)] == [1]


async def test_live_deliveries_wait_behind_a_replay_and_skip_what_it_covered():
    conn = opening("a")
    for seq in (3, 4, 5):
        conn.enqueue(delivery("a", seq))
    assert drained(conn) == []
    conn.outbox.offer(delivery("a", 2))
    conn.outbox.offer(delivery("a", 3))
    assert conn.end_replay(replayed_up_to=3)
    assert [d.seq for d in drained(conn)] == [2, 3, 4, 5]


async def test_begin_replay_drops_queued_deliveries_but_keeps_other_frames():
    conn = live("a")
    conn.outbox.offer(delivery("a", 1))
    conn.outbox.offer("ping")
    conn.begin_replay()
    assert drained(conn) == ["ping"]


async def test_pings_skip_connections_that_have_not_sent_connected_yet():
    hub = Hub(Metrics())
    fresh_transport, ready_transport = RecordingTransport(), RecordingTransport()
    fresh, ready = opening("a", transport=fresh_transport), live("b", transport=ready_transport)
    hub.add(fresh)
    hub.add(ready)
    await hub.broadcast_ping()
    assert fresh_transport.sent == [] and drained(fresh) == []
    assert [frame["type"] for frame in ready_transport.frames()] == ["ping"]


async def test_a_heartbeat_to_many_connections_gives_the_event_loop_a_turn_between_slices():
    hub = Hub(Metrics())
    transports = [RecordingTransport() for _ in range(3 * WALK_SLICE)]
    for n, transport in enumerate(transports):
        hub.add(live(f"u{n}", transport=transport))
    pinged_when_the_loop_ran: list[int] = []
    asyncio.get_running_loop().call_soon(lambda: pinged_when_the_loop_ran.append(sum(1 for t in transports if t.sent)))
    await hub.broadcast_ping()
    assert pinged_when_the_loop_ran == [WALK_SLICE]
    assert all(len(transport.sent) == 1 for transport in transports)
    assert not writer_tasks()  # written at once, none queued


async def test_close_all_reaches_every_connection():
    hub = Hub(Metrics())
    conns = [live("a"), live("b")]
    for conn in conns:
        hub.add(conn)
    request = CloseRequest(1012, "restart", "drain")
    hub.close_all(request)
    assert all(drained(conn) == [request] for conn in conns)


async def test_an_outbox_holds_no_buffer_while_empty():
    outbox = Outbox(4)
    assert outbox.items is None
    outbox.offer("x")
    assert outbox.take_nowait() == "x"
    assert outbox.items is None and outbox.take_nowait() is None


async def test_frames_the_transport_takes_need_no_writer():
    transport = RecordingTransport()
    hub, conn = Hub(Metrics()), opening("a", transport=transport)
    hub.add(conn)
    conn.offer("connected")  # while replaying: control frames still go out at once
    conn.end_replay(0)
    hub.deliver(delivery("a", 1))
    await hub.broadcast_ping()
    assert transport.sent[:2] == ["connected", delivery("a", 1).frame]
    assert transport.sent[2].startswith('{"type":"ping"')
    assert not writer_tasks() and conn.outbox.items is None


async def test_a_writer_starts_only_when_the_transport_pushes_back_and_ends_once_it_drained():
    transport = RecordingTransport(writable=False)
    hub, conn = hub_with_live(transport)
    hub.deliver(delivery("a", 1))
    hub.deliver(delivery("a", 2))
    conn.offer("ping")
    assert len(writer_tasks()) == 1
    transport.writable = True
    await eventually(lambda: not writer_tasks(), what="the writer drained the outbox and ended")
    assert transport.sent == [delivery("a", 1).frame, delivery("a", 2).frame, "ping"]
    assert conn.last_taken_seq == 2
    hub.deliver(delivery("a", 3))  # the writer is gone and nothing waits: written at once
    assert transport.sent[-1] == delivery("a", 3).frame and not writer_tasks()


async def test_the_close_frame_is_the_last_thing_written():
    transport = RecordingTransport()
    conn = live("a", transport=transport)
    conn.request_close(CloseRequest(1013, "slow", "slow_consumer"))
    conn.offer("ping")
    assert conn.state is CLOSING and conn.close_label == "slow_consumer"
    await eventually(lambda: transport.close_frame is not None, what="the close frame written")
    assert transport.close_frame == (1013, "slow") and transport.sent == []
    assert conn.offer("ping") and transport.sent == [] and not writer_tasks()


async def test_no_writer_starts_after_the_session_ends():
    conn = live("a")
    conn.offer("ping")
    writer = conn.end()
    assert writer is not None
    writer.cancel()
    await asyncio.gather(writer, return_exceptions=True)
    conn.offer("ping")
    conn.request_close(CloseRequest(1013, "slow", "slow_consumer"))
    assert not writer_tasks() and conn.outbox.items is None


async def test_a_stalled_send_aborts_the_transport_and_is_counted_as_stalled():
    transport = RecordingTransport(writable=False)
    hub, conn = hub_with_live(transport)
    hub.deliver(delivery("a", 1))
    await eventually(lambda: conn.sending_since > 0, what="the writer stuck in its send")
    assert await hub.abort_stalled(send_timeout=60) == 0
    clock = asyncio.get_running_loop().time
    await eventually(lambda: clock() - conn.sending_since > 0.05, what="the send stuck for 0.05 s")
    assert await hub.abort_stalled(send_timeout=0.05) == 1
    assert transport.aborted and conn.state is ABORTED and conn.close_label == "stalled"
    assert conn.offer("ping") and conn.outbox.items is None  # dropped: nothing is written any more


async def test_outbound_limit_defers_the_user_until_a_catch_up_and_says_when():
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
    transport = RecordingTransport()
    hub, conn = hub_with_live(transport)
    for seq in (1, 2):
        hub.deliver(delivery("a", seq))
    # Redis lost its data: the broker hands over the new epoch from its first event.
    for seq in (1, 2):
        hub.deliver(delivery("a", seq, epoch="r2"))
    hub.deliver(delivery("a", 2, epoch="r2"))  # a repeat, as after a catch-up
    sent = transport.sent
    await eventually(lambda: len(sent) >= 5, what="the new epoch's deliveries written")
    assert sent[:2] == [delivery("a", 1).frame, delivery("a", 2).frame]
    assert resync_notice(sent[2]) == ResyncRequired(reason="epoch_changed", seq=0, epoch="r2")
    assert sent[3:] == [delivery("a", 1, "r2").frame, delivery("a", 2, "r2").frame]
    assert (conn.epoch, conn.last_queued_seq) == ("r2", 2)


async def test_a_gap_is_announced_with_resync_required_at_the_offset_before_the_next_delivery():
    conn = live("a")
    conn.enqueue(delivery("a", 1))
    assert [d.seq for d in drained(conn)] == [1]
    for seq in (4, 5):
        conn.enqueue(delivery("a", seq))
    items = drained(conn)
    assert resync_notice(items[0]) == ResyncRequired(reason="history_gap", seq=3, epoch=EPOCH)
    assert [d.seq for d in items[1:]] == [4, 5]


async def test_deliveries_queued_in_the_old_epoch_give_way_to_the_resync_notice():
    conn = live("a")
    for seq in (1, 2):
        conn.enqueue(delivery("a", seq))  # queued, not yet written
    conn.enqueue(delivery("a", 1, epoch="r2"))
    items = drained(conn)
    assert resync_notice(items[0]).epoch == "r2" and [(d.epoch, d.seq) for d in items[1:]] == [("r2", 1)]
    # A server-side catch-up (outbound limit) resumes from here, in the new epoch.
    assert (conn.last_taken_seq, conn.epoch) == (0, "r2")


async def test_a_replay_in_a_new_epoch_drops_held_deliveries_of_the_old_one():
    conn = opening("a")
    conn.enqueue(delivery("a", 9, epoch="old"))  # handed over before the replay's read
    conn.enqueue(delivery("a", 4, epoch="new"))
    conn.epoch = "new"  # what the replay's read found
    assert conn.end_replay(replayed_up_to=3)
    assert [(d.epoch, d.seq) for d in drained(conn)] == [("new", 4)]
