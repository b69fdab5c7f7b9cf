"""Property: across any interleaving of publishes, reads, disconnects and resumes, a client
processes every event of its user exactly once, in order.

Runs the real session stream logic (`_open_stream`), hub and memory broker in one event loop,
without sockets; hypothesis chooses how many events are published at each await point inside
the resume, which is where the replay/live seam could lose or repeat an event.
"""

from __future__ import annotations

import asyncio

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasksync.broker import Delivery, MemoryBroker
from tasksync.events import TaskEvent
from tasksync.hub import Connection
from tasksync.service import Service
from tasksync.stream import open_stream
from tasksync.settings import Settings

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
    """Processes frames like the SDK: resumes from the last seq it processed."""

    def __init__(self) -> None:
        self.last_seq: int | None = None
        self.epoch: str | None = None
        self.processed: list[int] = []

    def handle(self, item) -> None:
        if isinstance(item, Delivery):
            assert self.last_seq is not None and item.seq == self.last_seq + 1, (
                f"after {self.last_seq} got {item.seq}: a gap or a duplicate"
            )
            self.last_seq = item.seq
            self.processed.append(item.seq)
            return
        frame = msgspec.json.decode(item)
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
    client = Client()
    conn: Connection | None = None

    async def connect() -> Connection:
        new = Connection(USER, 100_000)
        service.hub.add(new)
        await open_stream(new, service, client.resume_point(), first=True)
        return new

    def read(conn: Connection, count: int) -> None:
        for _ in range(count):
            item = conn.outbox.take_nowait()
            if item is None:
                return
            client.handle(item)

    conn = await connect()
    read(conn, 1)  # the `connected` frame
    # A fresh connection starts at the head it was given; "every event" means every one after it.
    start = client.last_seq
    for action, amount in plan:
        if action == "publish":
            await broker.publish_some(amount)
        elif action == "read" and conn is not None:
            read(conn, amount)
        elif action == "drop" and conn is not None:
            service.hub.remove(conn)  # whatever was queued and unread is lost with the socket
            conn = None
        elif action == "resume_message":
            if conn is None:
                conn = await connect()
            else:
                conn.begin_replay()
                await open_stream(conn, service, client.resume_point(), first=False)
    if conn is None:
        conn = await connect()
    read(conn, 1_000_000)
    assert client.processed == list(range(start + 1, broker.published + 1))
