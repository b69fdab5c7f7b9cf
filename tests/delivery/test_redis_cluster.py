"""Two TaskSync replicas on a real Redis Cluster (3 masters with a replica each), with users
chosen so that their slots fall on every master: isolation, resume, dedupe across replicas and
per-user order; then a master killed under load."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator

import httpx
import pytest

from tasksync.broker import BrokerUnavailable, Delivery
from tasksync.broker.redis import RedisBroker
from tasksync.broker.redis_layout import user_keys
from tasksync.client import SyncClient
from tasksync.events import TaskEvent
from tasksync.protocol import ResyncRequired, TaskUpdate
from tests.delivery.test_redis_restart import Tab, assert_no_silent_gap, close_tabs
from tests.service.test_delivery import next_update, publish_http
from tests.support.events import cloudevent, payload
from tests.support.metrics import value
from tests.support.publishing import RetryingPublisher
from tests.support.redis_cluster import RedisCluster, running_redis_cluster
from tests.support.waiting import eventually

USERS_PER_MASTER = 2


def users_by_master(cluster: RedisCluster, per_master: int = USERS_PER_MASTER) -> list[list[str]]:
    """User ids whose keys live on each master, in master order."""
    masters = cluster.masters()
    found: list[list[str]] = [[] for _ in masters]
    for n in itertools.count():
        user = f"user-{n}"
        slot_owner = cluster.master_of(user_keys("tasksync", user).head)
        index = next(i for i, master in enumerate(masters) if master.port == slot_owner.port)
        if len(found[index]) < per_master:
            found[index].append(user)
        if all(len(users) == per_master for users in found):
            return found
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def shared_cluster() -> Iterator[RedisCluster]:
    """One cluster for the tests that only read and write through TaskSync."""
    with running_redis_cluster() as cluster:
        yield cluster


def replicas(start_service, cluster: RedisCluster):
    return [start_service("--dev", "--broker", cluster.url) for _ in range(2)]


async def test_users_on_every_master_each_get_their_own_events_in_order_from_either_replica(
    start_service, shared_cluster
):
    a, b = replicas(start_service, shared_cluster)
    users = [user for group in users_by_master(shared_cluster) for user in group]
    tabs = {user: (SyncClient(a.ws, user_id=user), SyncClient(b.ws, user_id=user)) for user in users}
    for pair in tabs.values():
        for tab in pair:
            await tab.connect()
    try:
        # Batches over every master (one pipeline per master), through both replicas in turn;
        # the last two one event at a time.
        for round_ in range(4):
            replica = (a, b)[round_ % 2]
            batch = [payload(user, title=f"{user}-{round_}") for user in users]
            if round_ < 2:
                answer = await publish_http(replica, batch)
                assert answer.status_code == 202 and answer.json() == {"accepted": len(users), "duplicates": 0}
                continue
            for event in batch:
                assert (await publish_http(replica, event)).status_code == 202
        for user, pair in tabs.items():
            for tab in pair:
                got = [await next_update(tab) for _ in range(4)]
                assert [u.task["title"] for u in got] == [f"{user}-{i}" for i in range(4)], user
                assert [u.seq for u in got] == [1, 2, 3, 4]
    finally:
        for pair in tabs.values():
            for tab in pair:
                await tab.close()


async def test_a_client_resumes_on_the_other_replica_and_duplicates_are_delivered_once(start_service, shared_cluster):
    a, b = replicas(start_service, shared_cluster)
    users = [group[-1] for group in users_by_master(shared_cluster, per_master=3)]
    for user in users:
        tab = SyncClient(a.ws, user_id=user)
        await tab.connect()
        await publish_http(a, payload(user, title="seen"))
        assert (await next_update(tab)).task["title"] == "seen"
        await tab.close()
        # Missed while away, published through both replicas; the same event id twice.
        event = cloudevent(payload(user, title="once"), event_id=f"dup-{user}")
        async with httpx.AsyncClient() as http:
            for replica in (a, b, a):
                response = await http.post(replica.http + "/dapr/task-events", json=event)
                assert response.json() == {"status": "SUCCESS"}
        await publish_http(b, payload(user, title="after"))
        moved = SyncClient(b.ws, user_id=user)
        moved.last_seq, moved.epoch = tab.last_seq, tab.epoch
        connected = await moved.connect()
        assert connected.resumed
        got = [await next_update(moved) for _ in range(2)]
        assert [(u.seq, u.task["title"]) for u in got] == [(2, "once"), (3, "after")]
        await moved.close()
    duplicates = sum(value(replica, "tasksync_events_duplicate_total") for replica in (a, b))
    assert duplicates == 2 * len(users)


def assert_every_event_or_a_resync(tab: Tab, acknowledged: list[int]) -> None:
    """No silent gap, and every acknowledged event reached the tab unless a notice told it to
    refetch; after the last notice, every acknowledged event it did not cover, in order."""
    assert_no_silent_gap(tab)
    if not tab.notices():
        assert tab.numbers() == acknowledged, f"{tab}: events missing without a resync"
        return
    at = max(i for i, f in enumerate(tab.frames) if isinstance(f, ResyncRequired))
    after = [f.task["n"] for f in tab.frames[at + 1 :] if isinstance(f, TaskUpdate)]
    assert after == acknowledged[len(acknowledged) - len(after) :], f"{tab}: after the resync"


async def test_a_master_killed_under_load_costs_only_its_users_and_no_event_is_silently_missing(
    start_service, redis_cluster
):
    a, b = replicas(start_service, redis_cluster)
    groups = users_by_master(redis_cluster)
    victim_index = 1
    victims, others = groups[victim_index], [u for i, g in enumerate(groups) if i != victim_index for u in g]
    users = victims + others
    tabs = [
        Tab(user, name, SyncClient(replica.ws, user_id=user))
        for user in users
        for name, replica in (("a", a), ("b", b))
    ]
    for tab in tabs:
        await tab.client.connect()
    readers = [asyncio.create_task(tab.read()) for tab in tabs]
    publisher = RetryingPublisher([a.http, b.http], give_up_after=120)
    acknowledged: dict[str, list[int]] = {user: [] for user in users}
    numbers = itertools.count()
    streaming = True

    async def stream(user: str) -> None:
        while streaming:
            n = next(numbers)
            await publisher.publish({"id": f"f-{n}", "event": "task.updated", "user_id": user, "task": {"n": n}})
            acknowledged[user].append(n)
            await asyncio.sleep(0.01)  # a steady stream, so the kill falls in the middle of it: the load shape

    streams = [asyncio.create_task(stream(user)) for user in users]
    try:
        await eventually(lambda: all(len(n) >= 5 for n in acknowledged.values()), timeout=60, what="the load")
        killed = await asyncio.to_thread(redis_cluster.kill_master, victim_index)
        during = {user: len(acknowledged[user]) for user in others}
        # The other masters answer: both replicas stay ready for their users.
        async with httpx.AsyncClient(timeout=5) as http:
            for replica in (a, b):
                assert (await http.get(replica.http + "/health/ready")).status_code == 200
        await asyncio.to_thread(redis_cluster.wait_for_failover, killed, 60)
        # While the failover ran (over a second: the cluster first has to count the master as
        # failed), the other shards' users' events went on being acknowledged.
        stalled = [user for user in others if len(acknowledged[user]) <= during[user]]
        assert not stalled, f"no event of {stalled} acknowledged during the failover"
        after = {user: len(acknowledged[user]) for user in users}
        await eventually(
            lambda: all(len(acknowledged[user]) >= after[user] + 5 for user in users),
            timeout=60,
            what="events of every user after the failover",
        )
    finally:
        streaming = False
        await asyncio.gather(*streams, return_exceptions=True)
    try:
        for task in streams:
            assert task.exception() is None, task.exception()

        def delivered() -> bool:
            late = [t.user for t in tabs if acknowledged[t.user][-1] not in t.numbers() and not t.notices()]
            assert not late, f"still waiting: {late}"
            late = [t.user for t in tabs if acknowledged[t.user][-1] not in t.numbers()]
            assert not late, f"still waiting after a resync: {late}"
            return True

        await eventually(delivered, timeout=60, what="every tab's last acknowledged event")
        for tab in tabs:
            assert_every_event_or_a_resync(tab, acknowledged[tab.user])
        for tab in tabs:
            if tab.user in others:
                assert tab.notices() == [], f"{tab.user}, on a master that did not fail, was told to resync"
                assert tab.numbers() == acknowledged[tab.user], f"{tab.user}: lost or duplicated"
        resyncs = sum(len(tab.notices()) for tab in tabs)
        print(
            f"master {killed.port} killed; {resyncs} resync notices among {2 * len(victims)} tabs of its users; "
            f"{publisher.retries} publish retries"
        )
    finally:
        await close_tabs(tabs, readers, publisher)


async def test_wait_on_the_cluster_asks_each_master_for_its_own_replica(shared_cluster):
    """Each master has one replica: a batch over every master is acknowledged when one replica
    is asked for, and refused (every event) when two are."""
    users = [user for group in users_by_master(shared_cluster) for user in group]
    for replicas_wanted, acknowledged in ((1, True), (2, False)):
        broker = RedisBroker(shared_cluster.url, wait_replicas=replicas_wanted, wait_timeout=0.2)
        try:
            batch = [
                TaskEvent(id=f"wait-{replicas_wanted}", user_id=user, event="task.updated", task={}, occurred_at="t")
                for user in users
            ]
            outcomes = await broker.publish_many(batch)
        finally:
            await broker.stop()
        if acknowledged:
            assert all(isinstance(outcome, Delivery) for outcome in outcomes), outcomes
        else:
            assert all(isinstance(outcome, BrokerUnavailable) for outcome in outcomes), outcomes
            assert "1 of 2 replicas" in str(outcomes[0])


async def test_a_burst_beyond_the_connection_pool_is_served_and_delivered_exactly_once_in_order(shared_cluster):
    """Twelve hundred users on every master open in quick waves on one replica (watch, then read
    the head, as a handshake does), some while its listeners are still coming up, and another
    replica publishes to all of them in batches sent together: more script calls in flight than
    the replica holds connections to each master. Every call succeeds and the watching replica
    hands on every event once, in order, to every user, whenever its watch came."""
    users = [f"burst-{n}" for n in range(1200)]
    assert len({shared_cluster.master_of(user_keys("tasksync", user).head).port for user in users}) == 3
    watcher, publisher = RedisBroker(shared_cluster.url), RedisBroker(shared_cluster.url)
    received: dict[str, list[int]] = {user: [] for user in users}

    def sink(delivery: Delivery) -> int:
        received[delivery.user_id].append(delivery.seq)
        return 1

    watcher.set_sink(sink)
    await watcher.start()
    try:

        async def open_user(user: str) -> int:
            await watcher.watch(user)
            return (await watcher.position(user)).seq

        # In waves, as a load generator's sockets arrive: each wave's watch round and head reads
        # overlap the next wave's, and the catch-ups of the channels confirmed meanwhile.
        opening = []
        for wave in range(0, len(users), 150):
            opening += [asyncio.create_task(open_user(user)) for user in users[wave : wave + 150]]
            await asyncio.sleep(0.02)
        heads = dict(zip(users, await asyncio.gather(*opening), strict=True))
        rounds, batch_size = 3, 20
        events = [
            TaskEvent(id=f"burst-{r}", user_id=user, event="task.updated", task={"r": r}, occurred_at="t")
            for r in range(rounds)
            for user in users
        ]
        batches = [events[i : i + batch_size] for i in range(0, len(events), batch_size)]
        outcomes = [o for got in await asyncio.gather(*(publisher.publish_many(b) for b in batches)) for o in got]
        refused = [outcome for outcome in outcomes if not isinstance(outcome, Delivery)]
        assert not refused, f"{len(refused)} of {len(outcomes)} publishes refused, e.g. {refused[0]!r}"

        def all_delivered() -> bool:
            late = [user for user in users if len(received[user]) < rounds]
            assert not late, f"{len(late)} users still waiting, e.g. {late[0]}: {received[late[0]]}"
            return True

        await eventually(all_delivered, timeout=60, what="every event of every user")
        for user in users:
            assert received[user] == [heads[user] + r + 1 for r in range(rounds)], f"{user}: {received[user]}"
    finally:
        await watcher.stop()
        await publisher.stop()
