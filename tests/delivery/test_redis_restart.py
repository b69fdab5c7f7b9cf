"""Redis restarted under a steady publish stream, with live tabs on two replicas.

Two replicas, because what a restart breaks is each replica's pub/sub listener: while it
reconnects, events ingested by either replica reach no tab of that replica, and only a catch-up
from Redis' history can deliver them. Every tab stays connected throughout (none reconnects), so
the promise is checked on the live socket: every event, or `resync_required`.

The publisher stops shortly after the restart, so the last events it had acknowledged were
published while the listeners were still reconnecting and no later event exposes their gap.

Redis can also come back with only part of its data: with `appendfsync everysec` a crash loses
up to a second of writes, and a failover can promote a replica that had not received the last
ones. The epoch survives but offsets go back, so new events would reuse offsets tabs already
hold. The loss is made exact here with a snapshot: Redis runs without AOF, the test SAVEs, and a
kill and restart brings Redis back as of that SAVE.

A message on a user's channel that is not TaskSync's (or another version's) costs one log line
and a catch-up; the listener goes on.

The last test holds the broker's catch-up still, in one event loop on a real Redis: a catch-up
whose history read keeps failing is retried until it succeeds, and holds up no other user.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis

from tasksync.broker import BrokerUnavailable
from tasksync.broker.redis import RedisBroker
from tasksync.broker.redis_layout import user_keys
from tasksync.client import SyncClient
from tasksync.events import TaskEvent
from tasksync.protocol import ResyncRequired, TaskUpdate
from tests.support.publishing import RetryingPublisher
from tests.support.redis_server import RedisServer
from tests.support.waiting import eventually

USERS = ("ann", "ben")
ANN = user_keys("tasksync", "ann")
# Events acknowledged before Redis goes down, and after it is back (then publishing stops).
BEFORE_OUTAGE = 20
AFTER_RESTART = 10
# The outage lasts until the stream has been refused this often (it certainly falls inside the
# stream), and until each replica's pub/sub listener has failed to reconnect this often: it logs
# LISTENER_FAILED each time and then waits 0.1 s, 0.2 s, ... twice as long as before, so after
# the sixth it waits 3.2 s, and the events published after the restart all land in that wait.
OUTAGE_REFUSALS = 5
LISTENER_FAILURES = 6
LISTENER_FAILED = "redis pub/sub connection lost"
PACE = 0.02


@dataclass
class Tab:
    """One live tab: every task_update and resync_required it received, in order."""

    user: str
    replica: str
    client: SyncClient
    frames: list[TaskUpdate | ResyncRequired] = field(default_factory=list)

    async def read(self) -> None:
        while True:
            frame = await self.client.receive()
            if isinstance(frame, TaskUpdate | ResyncRequired):
                self.frames.append(frame)

    def numbers(self) -> list[int]:
        return [frame.task["n"] for frame in self.frames if isinstance(frame, TaskUpdate)]

    def notices(self) -> list[ResyncRequired]:
        return [frame for frame in self.frames if isinstance(frame, ResyncRequired)]

    def __str__(self) -> str:
        return f"{self.user}'s tab on replica {self.replica}"


@dataclass
class Stream:
    """Publishes events of USERS in turn at a steady pace, and records per user what was
    acknowledged (202), split at the moment the restart began."""

    publisher: RetryingPublisher
    acknowledged: dict[str, list[int]] = field(default_factory=lambda: {user: [] for user in USERS})
    acknowledged_after_restart: dict[str, list[int]] = field(default_factory=lambda: {user: [] for user in USERS})
    restarting: bool = False
    published: int = 0

    async def publish(self, n: int) -> None:
        user = USERS[n % len(USERS)]
        await self.publisher.publish({"id": f"restart-{n}", "event": "task.updated", "user_id": user, "task": {"n": n}})
        self.acknowledged[user].append(n)
        if self.restarting:
            self.acknowledged_after_restart[user].append(n)
        self.published += 1

    @property
    def count_after_restart(self) -> int:
        return sum(map(len, self.acknowledged_after_restart.values()))

    async def run(self) -> None:
        """Publish until AFTER_RESTART events were acknowledged after the restart began."""
        n = 0
        while self.count_after_restart < AFTER_RESTART:
            await self.publish(n)
            n += 1
            await asyncio.sleep(PACE)

    async def markers(self, first: int) -> dict[str, int]:
        """One more event per user once the stream has been delivered: anything still on its
        way to a tab arrives before its marker."""
        numbers = {}
        for n in range(first, first + len(USERS)):
            numbers[USERS[n % len(USERS)]] = n
            await self.publish(n)
        return numbers


def received(tabs: list[Tab], wanted: dict[str, int]) -> bool:
    """Whether every tab has received the event numbered `wanted[its user]`; says who has not."""
    waiting = [f"{tab} ({len(tab.numbers())} events so far)" for tab in tabs if wanted[tab.user] not in tab.numbers()]
    assert not waiting, "still waiting: " + ", ".join(waiting)
    return True


async def close_tabs(tabs: list[Tab], tasks: list[asyncio.Task[Any]], publisher: Any) -> None:
    """A test's end, however it went: its reading and publishing tasks cancelled, then its
    publisher and its tabs' clients closed."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await publisher.aclose()
    for tab in tabs:
        await tab.client.close()


def assert_no_silent_gap(tab: Tab) -> None:
    """What a client relies on: between resync notices, each update follows the one before by
    exactly one seq in one epoch, from where `connected` or the notice put the stream."""
    epoch, seq = tab.client.connected.epoch, tab.client.connected.seq
    for frame in tab.frames:
        if isinstance(frame, ResyncRequired):
            epoch, seq = frame.epoch, frame.seq
            continue
        assert (frame.epoch, frame.seq) == (epoch, seq + 1), (
            f"{tab}: after seq {seq} of epoch {epoch} came seq {frame.seq} of epoch {frame.epoch} "
            "without resync_required"
        )
        seq = frame.seq


async def restart_under_load(start_service, redis_server: RedisServer) -> tuple[list[Tab], Stream]:
    """Tabs of every user on both replicas, a steady stream through both replicas' /v1/events,
    Redis killed in the middle of it and started again; returns once every tab has received
    its user's last acknowledged event, and then a marker."""
    replicas = {name: start_service("--dev", "--broker", redis_server.url) for name in ("a", "b")}
    tabs = [
        Tab(user, name, SyncClient(replica.ws, user_id=user)) for user in USERS for name, replica in replicas.items()
    ]
    for tab in tabs:
        await tab.client.connect()
    readers = [asyncio.create_task(tab.read()) for tab in tabs]
    stream = Stream(RetryingPublisher([replica.http for replica in replicas.values()]))
    publishing = asyncio.create_task(stream.run())
    try:
        await eventually(lambda: stream.published >= BEFORE_OUTAGE, timeout=60, what="the stream under way")
        await asyncio.to_thread(redis_server.kill)
        refused = stream.publisher.retries
        await eventually(
            lambda: stream.publisher.retries >= refused + OUTAGE_REFUSALS, timeout=60, what="the stream refused"
        )
        await eventually(
            lambda: all(replica.log().count(LISTENER_FAILED) >= LISTENER_FAILURES for replica in replicas.values()),
            timeout=60,
            what="both replicas' listeners waiting to reconnect",
        )
        stream.restarting = True
        await asyncio.to_thread(redis_server.restart)
        await asyncio.wait_for(publishing, timeout=120)

        last = {user: numbers[-1] for user, numbers in stream.acknowledged.items()}
        await eventually(lambda: received(tabs, last), timeout=30, what="each user's last acknowledged event")
        markers = await stream.markers(first=stream.published)
        await eventually(lambda: received(tabs, markers), timeout=60, what="the markers")
        for reader in readers:
            assert not reader.done(), f"a tab's connection ended: {reader.exception()!r}"
        assert all(tab.client.connections == 1 for tab in tabs), "a tab reconnected"
        return tabs, stream
    finally:
        await close_tabs(tabs, [publishing, *readers], stream.publisher)


async def test_with_persistence_every_acknowledged_event_reaches_every_tab_once_in_order(start_service, redis_server):
    tabs, stream = await restart_under_load(start_service, redis_server)
    for tab in tabs:
        assert tab.notices() == [], f"{tab} was told to resync though Redis kept its data"
        assert_no_silent_gap(tab)
        missing = sorted(set(stream.acknowledged[tab.user]) - set(tab.numbers()))
        assert missing == [], f"{tab} never received {len(missing)} acknowledged events: {missing}"
        assert tab.numbers() == stream.acknowledged[tab.user], f"{tab}: duplicates or out of order"
    print(
        f"{stream.published} events acknowledged, {stream.count_after_restart} after the restart; "
        f"each of {len(tabs)} tabs received all of its user's, once, in order"
    )


@pytest.fixture
def volatile_redis() -> Iterator[RedisServer]:
    """A redis-server without persistence: a restart comes back empty."""
    server = RedisServer(persistent=False).start()
    yield server
    server.cleanup()


async def test_without_persistence_a_tab_gets_every_event_or_a_resync_then_every_event_after_it(
    start_service, volatile_redis
):
    tabs, stream = await restart_under_load(start_service, volatile_redis)
    for tab in tabs:
        assert_no_silent_gap(tab)
        notices = tab.notices()
        if not notices:
            assert tab.numbers() == stream.acknowledged[tab.user], f"{tab}: events silently missing"
            continue
        assert len(notices) == 1, f"{tab} was told to resync {len(notices)} times"
        notice = notices[0]
        assert notice.reason == "epoch_changed" and notice.epoch != tab.client.connected.epoch
        at = tab.frames.index(notice)
        before = [frame.task["n"] for frame in tab.frames[:at] if isinstance(frame, TaskUpdate)]
        after = [frame.task["n"] for frame in tab.frames[at + 1 :] if isinstance(frame, TaskUpdate)]
        acknowledged_before = [
            n for n in stream.acknowledged[tab.user] if n not in stream.acknowledged_after_restart[tab.user]
        ]
        # Before the notice: what Redis had published before it lost its data, in order, once.
        assert before == acknowledged_before[: len(before)], f"{tab}: duplicates or out of order before the resync"
        # After it: every event acknowledged since the restart, in order, once.
        assert after == stream.acknowledged_after_restart[tab.user], (
            f"{tab} missed {sorted(set(stream.acknowledged_after_restart[tab.user]) - set(after))} after its resync"
        )
        print(
            f"{tab}: {len(before)} of {len(acknowledged_before)} events before the restart, then resync_required "
            f"(seq {notice.seq}), then all {len(after)} acknowledged after it"
        )


# Events per user: kept by the snapshot, acknowledged and delivered after it (lost with the
# crash), and published once Redis is back.
KEPT = 4
LOST = 3
AFTER_LOSS = 5


class Rounds:
    """Publishes rounds of one event per user, numbered in publish order."""

    def __init__(self, publisher: RetryingPublisher, prefix: str) -> None:
        self.publisher = publisher
        self.prefix = prefix
        self.numbers = itertools.count()

    async def publish(self, rounds: int) -> dict[str, list[int]]:
        acknowledged: dict[str, list[int]] = {user: [] for user in USERS}
        for _ in range(rounds):
            for user in USERS:
                n = next(self.numbers)
                await self.publisher.publish(
                    {"id": f"{self.prefix}-{n}", "event": "task.updated", "user_id": user, "task": {"n": n}}
                )
                acknowledged[user].append(n)
        return acknowledged


async def connected_tabs(start_service, redis_url: str) -> tuple[dict, list[Tab], list[asyncio.Task[None]]]:
    replicas = {name: start_service("--dev", "--broker", redis_url) for name in ("a", "b")}
    tabs = [
        Tab(user, name, SyncClient(replica.ws, user_id=user)) for user in USERS for name, replica in replicas.items()
    ]
    for tab in tabs:
        await tab.client.connect()
    return replicas, tabs, [asyncio.create_task(tab.read()) for tab in tabs]


async def test_a_redis_that_lost_its_last_writes_makes_every_tab_resync_then_sends_every_later_event(
    start_service, volatile_redis
):
    replicas, tabs, readers = await connected_tabs(start_service, volatile_redis.url)
    publisher = RetryingPublisher([replica.http for replica in replicas.values()])
    rounds = Rounds(publisher, "loss")
    try:
        kept = await rounds.publish(KEPT)
        await eventually(
            lambda: received(tabs, {u: n[-1] for u, n in kept.items()}), timeout=30, what="the kept events"
        )
        with redis.Redis(port=volatile_redis.port) as admin:
            admin.save()
        lost = await rounds.publish(LOST)
        await eventually(
            lambda: received(tabs, {u: n[-1] for u, n in lost.items()}), timeout=30, what="the lost events"
        )
        await asyncio.to_thread(volatile_redis.kill)
        await asyncio.to_thread(volatile_redis.restart)
        with redis.Redis(port=volatile_redis.port) as admin:
            assert admin.hget(ANN.head, "seq") == str(KEPT).encode(), "Redis did not come back as of the SAVE"
        after = await rounds.publish(AFTER_LOSS)
        await eventually(
            lambda: received(tabs, {u: n[-1] for u, n in after.items()}),
            timeout=60,
            what="the last event after the loss",
        )
        for reader in readers:
            assert not reader.done(), f"a tab's connection ended: {reader.exception()!r}"
        assert all(tab.client.connections == 1 for tab in tabs), "a tab reconnected"
    finally:
        await close_tabs(tabs, readers, publisher)

    for tab in tabs:
        assert_no_silent_gap(tab)
        notices = tab.notices()
        assert len(notices) == 1, f"{tab} was told to resync {len(notices)} times: {tab.frames}"
        notice = notices[0]
        assert notice.reason == "epoch_changed" and notice.epoch != tab.client.connected.epoch, notice
        at = tab.frames.index(notice)
        before = [frame.task["n"] for frame in tab.frames[:at] if isinstance(frame, TaskUpdate)]
        later = [frame.task["n"] for frame in tab.frames[at + 1 :] if isinstance(frame, TaskUpdate)]
        assert before == kept[tab.user] + lost[tab.user], f"{tab}: before the resync"
        # A replica that finds the loss before the user's next event tells its tabs at once, with
        # the newest event Redis kept, again, in the new epoch.
        assert later in (after[tab.user], [kept[tab.user][-1], *after[tab.user]]), (
            f"{tab}: after the resync got {later}, every event after the loss is {after[tab.user]}"
        )
        print(f"{tab}: resync_required at seq {notice.seq}, then {later}")


async def test_a_replica_finds_lost_writes_by_its_last_delivered_event_when_the_publisher_is_new(volatile_redis):
    """The watching replica W only ever read Redis before the loss and the events after it come
    from a replica started after it (P2), so no one's count of writes shows the loss: W's check
    of the newest event it handed on does. W's catch-up is held until P2 has reused two offsets
    W already handed on; then W replaces the epoch, hands on the newest event again in the new
    epoch (its tabs announce resync_required before it), and every later event follows."""
    watcher, before, after = (RedisBroker(volatile_redis.url) for _ in range(3))
    timeline: list[tuple[str, int, str]] = []
    watcher.set_sink(lambda delivery: timeline.append((delivery.epoch, delivery.seq, delivery.event_id)) or 1)

    def event(name: str) -> TaskEvent:
        return TaskEvent(id=name, user_id="ann", event="task.updated", task={}, occurred_at="t")

    await watcher.start()
    try:
        await eventually(watcher.ready, what="the pub/sub listener up")
        await watcher.watch("ann")
        for n in range(KEPT):
            await before.publish(event(f"kept-{n}"))
        with redis.Redis(port=volatile_redis.port) as admin:
            admin.save()
        for n in range(LOST):
            await before.publish(event(f"lost-{n}"))
        await eventually(lambda: len(timeline) == KEPT + LOST, timeout=30, what="the lost events handed on")
        epoch = timeline[0][0]

        read_state, opened = watcher._read_state, asyncio.Event()

        async def held(user_id: str, first_wanted: int):
            await opened.wait()
            return await read_state(user_id, first_wanted)

        watcher._read_state = held
        await asyncio.to_thread(volatile_redis.kill)
        await asyncio.to_thread(volatile_redis.restart)
        await after.publish(event("after-0"))
        await after.publish(event("after-1"))
        opened.set()
        await eventually(lambda: len(timeline) > KEPT + LOST, timeout=30, what="the loss found")
        await after.publish(event("after-2"))
        await eventually(lambda: timeline[-1][2] == "after-2", timeout=30, what="the event after the new epoch")
    finally:
        await watcher.stop()
        await before.stop()
        await after.stop()

    names = [f"kept-{n}" for n in range(KEPT)] + [f"lost-{n}" for n in range(LOST)]
    assert timeline[: KEPT + LOST] == [(epoch, seq, name) for seq, name in enumerate(names, start=1)]
    with redis.Redis(port=volatile_redis.port) as admin:
        new_epoch = admin.hget(ANN.head, "epoch").decode()
    assert new_epoch != epoch
    # after-0 (seq 5) is covered only by the refetch resync_required asks for.
    assert timeline[KEPT + LOST :] == [(new_epoch, KEPT + 2, "after-1"), (new_epoch, KEPT + 3, "after-2")]


async def test_a_foreign_message_on_a_user_channel_costs_a_log_line_and_the_listener_goes_on(
    start_service, redis_server
):
    replica = start_service("--dev", "--broker", redis_server.url)
    tab = Tab("ann", "a", SyncClient(replica.ws, user_id="ann"))
    await tab.client.connect()
    bystander = Tab("ben", "a", SyncClient(replica.ws, user_id="ben"))
    await bystander.client.connect()
    readers = [asyncio.create_task(tab.read()), asyncio.create_task(bystander.read())]
    publisher = RetryingPublisher([replica.http])
    try:
        with redis.Redis(port=redis_server.port) as admin:
            assert admin.publish(ANN.channel, b"3 r-foreign 0 {\"not\": \"an event\"}") == 1
            assert admin.publish(ANN.channel, b"garbage") == 1
            # A well-formed header, next in ann's stream, but no task_update frame behind it: an
            # event JSON, as another version of TaskSync might publish.
            epoch = admin.hget(ANN.head, "epoch").decode()
            foreign = {"id": "foreign", "user_id": "ann", "event": "task.created", "task": {"n": 99},
                       "occurred_at": "2026-01-01T00:00:00.000Z", "source": "http"}
            assert admin.publish(ANN.channel, f"1 {epoch} 0 7\nforeign{json.dumps(foreign)}".encode()) == 1
        for n in (1, 2):
            await publisher.publish(
                {"id": f"after-garbage-{n}", "event": "task.updated", "user_id": "ann", "task": {"n": n}}
            )
            await eventually(lambda n=n: n in tab.numbers(), timeout=30, what=f"event {n} after the foreign messages")
        await publisher.publish({"id": "ben-marker", "event": "task.updated", "user_id": "ben", "task": {"n": 7}})
        await eventually(lambda: 7 in bystander.numbers(), timeout=30, what="ben's own event")
        assert tab.numbers() == [1, 2] and tab.notices() == [], tab.frames
        assert bystander.numbers() == [7] and bystander.notices() == [], bystander.frames
        assert_no_silent_gap(tab)
        assert replica.log().count("undecodable message") == 3
        assert not any(reader.done() for reader in readers) and tab.client.connections == 1
    finally:
        await close_tabs([tab, bystander], readers, publisher)


async def test_a_failing_catch_up_is_retried_until_it_succeeds_and_holds_up_no_other_user(redis_server):
    broker = RedisBroker(redis_server.url)
    # What the hub was handed, and each refused history read, in the order they happened.
    timeline: list[tuple[str, int | str]] = []
    broker.set_sink(lambda delivery: timeline.append((delivery.user_id, delivery.seq)) or 1)
    publisher = RedisBroker(redis_server.url)
    await broker.start()
    try:
        await eventually(broker.ready, what="the pub/sub listener up")
        for user in USERS:
            await broker.watch(user)

        # Pub/sub loses what is published now, as it does while a listener reconnects.
        on_message, losing = broker._on_message, True

        def lossy(user_id: str, data: bytes) -> None:
            if not losing:
                on_message(user_id, data)

        broker._on_message = lossy
        for n in range(3):
            for user in USERS:
                event = TaskEvent(
                    id=f"lost-{user}-{n}", user_id=user, event="task.updated", task={"n": n}, occurred_at="t"
                )
                await publisher.publish(event)
        losing = False

        # ann's history reads are refused three times (as by a connection that died with the
        # old Redis, or Redis still loading); ben's succeed.
        read_state, refusals = broker._read_state, 3

        async def refusing(user_id: str, first_wanted: int):
            nonlocal refusals
            if user_id == "ann" and refusals:
                refusals -= 1
                timeline.append(("ann", "refused"))
                raise BrokerUnavailable("redis: refused by the test")
            return await read_state(user_id, first_wanted)

        broker._read_state = refusing
        # Cut the listener's connection: it reconnects, and both users' channels need a catch-up.
        with redis.Redis(port=redis_server.port) as admin:
            admin.client_kill_filter(_type="pubsub")

        def delivered(user: str) -> list[int]:
            return [seq for who, seq in timeline if who == user and isinstance(seq, int)]

        def ann_caught_up() -> bool:
            assert delivered("ann") == [1, 2, 3], f"so far: {timeline}"
            return True

        await eventually(ann_caught_up, timeout=30, what="ann's catch-up")
        assert refusals == 0
        assert delivered("ben") == [1, 2, 3]
        last_refusal = max(i for i, entry in enumerate(timeline) if entry == ("ann", "refused"))
        assert timeline.index(("ben", 3)) < last_refusal, f"ben waited for ann's catch-up: {timeline}"
        assert timeline.index(("ann", 1)) > last_refusal
    finally:
        await broker.stop()
        await publisher.stop()


async def test_a_client_of_the_single_redis_layout_resumes_into_a_resync(start_service, redis_server):
    """Redis still holds what a TaskSync on the single-Redis layout wrote (a global epoch, ann's
    offset and history under the old key names); the new version reads none of it, so the tab
    that resumes from ann's old offset and epoch is told to resync, then gets her next event."""
    with redis.Redis(port=redis_server.port) as admin:
        admin.set("tasksync:epoch", "r-oldlayout")
        admin.set("tasksync:writes", 5)
        admin.set("tasksync:seq:ann", 5)
        for seq in range(1, 6):
            admin.xadd("tasksync:history:ann", {"e": "{}", "t": 0, "p": "r-oldlayout"}, id=f"{seq}-0")
    replica = start_service("--dev", "--broker", redis_server.url)
    tab = SyncClient(replica.ws, user_id="ann")
    tab.last_seq, tab.epoch = 5, "r-oldlayout"
    publisher = RetryingPublisher([replica.http])
    try:
        connected = await tab.connect()
        assert not connected.resumed and connected.epoch != "r-oldlayout"
        async with asyncio.timeout(30):
            notice = await tab.receive()
            assert isinstance(notice, ResyncRequired), notice
            assert (notice.reason, notice.seq, notice.epoch) == ("epoch_changed", 0, connected.epoch)
            await publisher.publish({"id": "new-1", "event": "task.updated", "user_id": "ann", "task": {"n": 1}})
            update = await tab.receive()
            while not isinstance(update, TaskUpdate):
                update = await tab.receive()
        assert (update.seq, update.epoch, update.task["n"]) == (1, connected.epoch, 1)
    finally:
        await publisher.aclose()
        await tab.close()
