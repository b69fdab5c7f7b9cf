"""The replay/live seam on the Redis broker, where live deliveries arrive late.

With Redis, an event is stored (and so replayable) the moment the publish script runs, but it
reaches this process's hub only when the pub/sub listener gets to its message. A connection that
resumes in between replays the event from history, leaves replay mode, and then receives the
same event again from the listener. Runs the real broker, hub and stream logic against a real
redis-server, in one event loop and without sockets, so the lagging listener can be held still.
"""

from __future__ import annotations

import asyncio

import redis

from tasksync.broker.redis import RedisBroker
from tasksync.broker.redis_layout import user_keys
from tasksync.connection import LIVE, Connection
from tasksync.events import TaskEvent
from tasksync.service import Service
from tasksync.settings import Settings
from tests.support.recording_transport import RecordingTransport
from tests.support.waiting import eventually

USER = "lag"


async def test_a_resume_does_not_get_again_an_event_the_listener_delivers_after_the_replay(redis_server):
    broker = RedisBroker(redis_server.url)
    service = Service(Settings(dev=True), broker=broker)
    node = service.node
    await broker.start()
    try:
        await eventually(broker.ready, what="the pub/sub listener up")
        # A tab that is live and keeps the user's channel subscribed.
        live_socket = RecordingTransport()
        live = Connection(USER, 100, live_socket, service.metrics)
        assert node.hub.add(live)
        await broker.watch(USER)
        await node.open_stream(live, None, first=True)
        epoch = live.epoch

        # Hold the next pub/sub message back from the listener, as a busy event loop would.
        held: list[tuple[str, bytes]] = []
        on_message = broker._on_message
        broker._on_message = lambda user_id, data: held.append((user_id, data))
        await broker.publish(TaskEvent(id="e1", user_id=USER, event="task.created", task={}, occurred_at="t"))
        await eventually(lambda: held, what="the listener holding the message of seq 1")

        # A second tab resumes from 0: history already holds seq 1, so the replay carries it.
        resuming_socket = RecordingTransport()
        resuming = Connection(USER, 100, resuming_socket, service.metrics)
        assert not node.hub.add(resuming)
        await node.open_stream(resuming, (0, epoch), first=True)
        assert resuming.state is LIVE

        # Now the listener delivers seq 1 live, to every tab of the user.
        broker._on_message = on_message
        for user_id, data in held:
            on_message(user_id, data)
        # A marker behind it: once both tabs wrote it, anything seq 1 caused was written too.
        await broker.publish(TaskEvent(id="e2", user_id=USER, event="task.created", task={}, occurred_at="t"))
        await eventually(lambda: 2 in live_socket.seqs() and 2 in resuming_socket.seqs(), what="the marker")
        assert live_socket.seqs() == [1, 2]
        assert resuming_socket.seqs() == [1, 2], "the resumed tab got seq 1 from the replay and again live"
    finally:
        await broker.stop()


CONCURRENT_USERS = 60


async def test_watches_arriving_together_are_subscribed_together_and_none_misses_an_event(redis_server):
    """Sixty users' first sockets arrive at once while each user's events keep coming (published
    through another broker, as by another replica). The watches are settled in a few rounds, not
    one by one, and every socket gets every event after the head its `connected` frame named,
    once, in order."""
    broker, publisher = RedisBroker(redis_server.url), RedisBroker(redis_server.url)
    service = Service(Settings(dev=True), broker=broker)
    node = service.node
    users = [f"together-{n}" for n in range(CONCURRENT_USERS)]
    rounds = 0
    settle = broker._sync_subscriptions

    async def counted(batch: list[str]) -> None:
        nonlocal rounds
        rounds += 1
        await settle(batch)

    broker._sync_subscriptions = counted
    published = dict.fromkeys(users, 0)
    streaming = True

    async def stream() -> None:
        n = 0
        while streaming:
            batch = [
                TaskEvent(id=f"{user}-{n}", user_id=user, event="task.updated", task={}, occurred_at="t")
                for user in users
            ]
            for outcome in await publisher.publish_many(batch):
                assert outcome is not None and not isinstance(outcome, Exception), outcome
                published[outcome.user_id] = outcome.seq
            n += 1
            await asyncio.sleep(0)

    async def open_socket(user: str) -> tuple[Connection, RecordingTransport]:
        socket = RecordingTransport()
        conn = Connection(user, 1000, socket, service.metrics)
        assert node.hub.add(conn)
        await broker.watch(user)
        await node.open_stream(conn, None, first=True)
        return conn, socket

    await broker.start()
    publishing = asyncio.create_task(stream())
    try:
        await eventually(broker.ready, what="the pub/sub listener up")
        await eventually(lambda: all(published.values()), what="events flowing for every user")
        opened = await asyncio.gather(*(open_socket(user) for user in users))
        at_open = max(published.values())
        await eventually(lambda: min(published.values()) >= at_open + 5, what="more events after the sockets opened")
        streaming = False
        await publishing
        final = dict(published)

        def delivered() -> bool:
            late = [conn.user_id for conn, socket in opened if final[conn.user_id] not in socket.seqs()]
            assert not late, f"{len(late)} users still waiting, e.g. {late[0]}"
            return True

        await eventually(delivered, timeout=30, what="every user's last event")
        for conn, socket in opened:
            head = socket.frames()[0]["seq"]
            assert socket.seqs() == list(range(head + 1, final[conn.user_id] + 1)), conn.user_id
        print(f"{CONCURRENT_USERS} watches settled in {rounds} subscription rounds")
        assert rounds < CONCURRENT_USERS // 2
    finally:
        streaming = False
        publishing.cancel()
        await asyncio.gather(publishing, return_exceptions=True)
        await broker.stop()
        await publisher.stop()


async def test_watch_and_unwatch_calls_racing_for_one_user_end_as_the_last_call_wants(redis_server):
    """Watches and unwatches of one user issued together, as a tab closing while another opens:
    whichever came last decides whether the user's channel stays subscribed."""
    broker = RedisBroker(redis_server.url)
    channel = user_keys("tasksync", "racer").channel
    admin = redis.Redis(port=redis_server.port)
    await broker.start()
    try:
        await eventually(broker.ready, what="the pub/sub listener up")
        for last in ("watch", "unwatch", "watch", "unwatch"):
            calls = ["watch", "unwatch"] * 5 + ([] if last == "unwatch" else ["watch"])
            tasks = [asyncio.create_task(getattr(broker, call)("racer")) for call in calls]
            # A second wave while the first is being settled.
            await asyncio.sleep(0)
            tasks += [asyncio.create_task(getattr(broker, call)("racer")) for call in calls]
            await asyncio.gather(*tasks)
            wanted = last == "watch"
            assert ("racer" in broker._subscribed) is wanted, last

            def redis_agrees(wanted: bool = wanted) -> bool:
                return (admin.pubsub_numsub(channel)[0][1] == 1) is wanted

            await eventually(redis_agrees, what=f"Redis subscribed as the last call ({last}) wants")
    finally:
        admin.close()
        await broker.stop()
