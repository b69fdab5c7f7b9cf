"""Property: across any interleaving of publishes, reads, disconnects and resumes, a client
processes every event of its user exactly once, in order.

Runs the real node (stream opening and resumes), hub, connections with their writers and the
memory broker in one event loop, without sockets; hypothesis chooses how many events are
published at each await point inside the resume, which is where the replay/live seam could lose
or repeat an event.
"""

from __future__ import annotations

import asyncio

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasksync.broker import MemoryBroker
from tasksync.connection import Connection
from tasksync.events import TaskEvent
from tasksync.service import Service
from tasksync.settings import Settings
from tests.support.recording_transport import RecordingTransport
from tests.support.waiting import eventually

USER = "u"


class InterleavingBroker(MemoryBroker):
    """A memory broker that lets other publishes happen at every await of a resume."""

    def __init__(self, draw_count) -> None:
        super().__init__(history_size=10_000)
        self._draw_count = draw_count
        self.published = 0

    async def publish_some(self, count: int) -> None:
        for _ in range(count):
            self.published += 1
            await self.publish(
                TaskEvent(id=f"e{self.published}", user_id=USER, event="task.updated", task={}, occurred_at="t")
            )

    async def _interleave(self) -> None:
        await self.publish_some(self._draw_count())
        await asyncio.sleep(0)

    async def position(self, user_id):
        await self._interleave()
        position = await super().position(user_id)
        await self._interleave()
        return position

    async def replay(self, user_id, since, epoch):
        await self._interleave()
        replay = await super().replay(user_id, since, epoch)
        await self._interleave()
        return replay


class Client:
    """Processes frames like the SDK: resumes from the last seq it processed.

    A `resume` frame on a live connection reaches the server after whatever it had written
    already: the client reads those frames, and the replay then repeats them. It skips such a
    repeat, and only such a repeat: any other duplicate, and any gap, fails."""

    def __init__(self) -> None:
        self.last_seq: int | None = None
        self.epoch: str | None = None
        self.processed: list[int] = []
        # The newest seq written before the last resume frame was handled.
        self.in_flight_up_to = 0

    def resume_sent(self, unread: list[str]) -> None:
        seqs = [frame["seq"] for frame in map(msgspec.json.decode, unread) if frame["type"] == "task_update"]
        self.in_flight_up_to = max(seqs, default=0)

    def handle(self, text: str) -> None:
        frame = msgspec.json.decode(text)
        if frame["type"] == "task_update":
            seq = frame["seq"]
            if self.last_seq is not None and seq <= self.last_seq <= self.in_flight_up_to:
                return  # written before the resume was handled, and replayed by it
            assert self.last_seq is not None and seq == self.last_seq + 1, (
                f"after {self.last_seq} got {seq}: a gap or a duplicate"
            )
            self.last_seq = seq
            self.processed.append(seq)
            return
        assert frame["type"] in ("connected", "ping"), frame
        if frame["type"] == "connected" and not frame["resumed"]:
            assert self.last_seq is None, "a resume that should have succeeded did not"
            self.last_seq, self.epoch = frame["seq"], frame["epoch"]

    def resume_point(self):
        return None if self.last_seq is None else (self.last_seq, self.epoch)


steps = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.integers(1, 4)),
        st.tuples(st.just("read"), st.integers(1, 6)),
        st.tuples(st.just("drop"), st.just(0)),
        st.tuples(st.just("resume_message"), st.just(0)),
    ),
    max_size=30,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=steps, data=st.data())
def test_replay_live_seam_loses_and_repeats_nothing(plan, data):
    asyncio.run(_run(plan, data))


async def _run(plan, data) -> None:
    broker = InterleavingBroker(lambda: data.draw(st.integers(0, 3), label="published during a resume await"))
    service = Service(Settings(dev=True, outbox_size=100_000), broker=broker)
    node = service.node
    client = Client()
    conn: Connection | None = None
    # What the connection wrote that the client has not read yet: lost with the socket.
    socket: list[str] = []

    async def connect() -> Connection:
        nonlocal socket
        transport = RecordingTransport()
        socket = transport.sent
        client.in_flight_up_to = 0
        new = Connection(USER, 100_000, transport, service.metrics)
        node.hub.add(new)
        await node.open_stream(new, client.resume_point(), first=True)
        return new

    def read(count: int) -> None:
        for _ in range(min(count, len(socket))):
            client.handle(socket.pop(0))

    conn = await connect()
    read(1)  # the `connected` frame
    # A fresh connection starts at the head it was given; "every event" means every one after it.
    start = client.last_seq
    for action, amount in plan:
        if action == "publish":
            await broker.publish_some(amount)
        elif action == "read" and conn is not None:
            read(amount)
        elif action == "drop" and conn is not None:
            # Whatever was queued or written and unread is lost with the socket.
            node.hub.remove(conn)
            writer = conn.end()
            if writer is not None:
                writer.cancel()
            conn = None
        elif action == "resume_message":
            if conn is None:
                conn = await connect()
            else:
                client.resume_sent(socket)
                conn.begin_replay()
                await node.open_stream(conn, client.resume_point(), first=False)
    if conn is None:
        conn = await connect()
    await eventually(lambda: conn.outbox.items is None, what="the writer wrote what the outbox held")
    read(1_000_000)
    assert client.processed == list(range(start + 1, broker.published + 1))
