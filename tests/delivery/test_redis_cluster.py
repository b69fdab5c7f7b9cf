"""Two TaskSync replicas on a real Redis Cluster (3 masters with a replica each), with users
chosen so that their slots fall on every master: isolation, resume, dedupe across replicas and
per-user order; then a master killed under load, and a slot resharded under load."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from redis.crc import key_slot

from tasksync.broker import BrokerUnavailable, Delivery
from tasksync.broker.redis import SLOTS_REREAD_INTERVAL, RedisBroker
from tasksync.broker.redis_layout import user_keys
from tasksync.client import SyncClient
from tasksync.events import TaskEvent
from tasksync.protocol import ResyncRequired, TaskUpdate
from tests.delivery.test_redis_restart import Tab, assert_no_silent_gap, close_tabs
from tests.service.test_delivery import next_update, publish_http
from tests.support.events import cloudevent, payload
from tests.support.metrics import value
from tests.support.publishing import RetryingPublisher
from tests.support.redis_cluster import (
    RedisCluster,
    assign_slot,
    begin_slot_migration,
    move_slot_keys,
    running_redis_cluster,
)
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


async def open_tabs(users: list[str], replicas: dict[str, Any]) -> tuple[list[Tab], list[asyncio.Task[None]]]:
    """A connected tab of each user on each replica (by name), and the tasks reading them."""
    tabs = [
        Tab(user, name, SyncClient(replica.ws, user_id=user)) for user in users for name, replica in replicas.items()
    ]
    for tab in tabs:
        await tab.client.connect()
    return tabs, [asyncio.create_task(tab.read()) for tab in tabs]


async def every_tab_gets_its_last(tabs: list[Tab], acknowledged: dict[str, list[int]], what: str) -> None:
    def delivered() -> bool:
        late = [str(t) for t in tabs if acknowledged[t.user][-1] not in t.numbers()]
        assert not late, f"still waiting: {late}"
        return True

    await eventually(delivered, timeout=30, what=what)


async def test_a_master_killed_under_load_costs_only_its_users_and_no_event_is_silently_missing(
    start_service, redis_cluster
):
    a, b = replicas(start_service, redis_cluster)
    groups = users_by_master(redis_cluster)
    victim_index = 1
    victims, others = groups[victim_index], [u for i, g in enumerate(groups) if i != victim_index for u in g]
    users = victims + others
    tabs, readers = await open_tabs(users, {"a": a, "b": b})
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


async def test_a_master_down_before_its_failover_costs_only_its_users_even_the_one_redis_py_asks_first(
    redis_cluster,
):
    """The master redis-py's cluster client asks whenever it reads the cluster again (its
    default node) is killed, and held down (its replica paused, so no failover comes): round
    after round, the broker stays ready, that master's user's publishes are refused and every
    other user's are acknowledged. Then the replica takes over, and that user's are too.

    redis-py's own refresh asks the default node for COMMAND, and when that fails it closes
    every connection to every node: the broker used to refresh that way before each pipeline,
    so while this one master was down every user's publish failed, and so did readiness."""
    users = [group[0] for group in users_by_master(redis_cluster, per_master=1)]
    broker = RedisBroker(redis_cluster.url)
    try:
        assert all(isinstance(outcome, Delivery) for outcome in await broker.publish_many(round_of(users, 0)))
        # The one master that matters here is the one redis-py's client would ask: known only
        # to the client itself.
        default = broker._redis.get_default_node()
        victim = next(i for i, master in enumerate(redis_cluster.masters()) if master.port == default.port)
        with redis_cluster.replicas_paused(redis_cluster.masters()[victim]):
            killed = await asyncio.to_thread(redis_cluster.kill_master, victim)
            for n in range(1, 6):
                outcomes = await broker.publish_many(round_of(users, n))
                assert_only_refused(users, outcomes, users[victim], f"round {n}")
                assert await broker.ready(), f"round {n}: not ready with two of three masters up"
        await asyncio.to_thread(redis_cluster.wait_for_failover, killed, 60)
        outcomes = await broker.publish_many(round_of(users, 6))
        assert all(isinstance(outcome, Delivery) for outcome in outcomes), outcomes
    finally:
        await broker.stop()


async def test_a_master_that_lost_its_scripts_is_served_while_another_master_is_down(redis_cluster):
    """One master is down, held before its failover; another has lost TaskSync's scripts (a
    restart, SCRIPT FLUSH). That one's users' publishes load them again and are acknowledged.
    The scripts used to be loaded on every master at once, through redis-py's client, and the
    master that was down failed the load for everyone."""
    users = [group[0] for group in users_by_master(redis_cluster, per_master=1)]
    broker = RedisBroker(redis_cluster.url)
    down, flushed = 0, 1
    masters = redis_cluster.masters()
    try:
        assert all(isinstance(outcome, Delivery) for outcome in await broker.publish_many(round_of(users, 0)))
        with redis_cluster.replicas_paused(masters[down]):
            await asyncio.to_thread(redis_cluster.kill_master, down)
            with redis.Redis(host="127.0.0.1", port=masters[flushed].port) as node:
                node.script_flush()
            for n in range(1, 3):
                outcomes = await broker.publish_many(round_of(users, n))
                assert_only_refused(users, outcomes, users[down], f"round {n}")
    finally:
        await broker.stop()


async def test_failed_publishes_read_the_slot_map_again_at_most_every_interval(redis_cluster):
    """A master and its replica are down, so every publish of its user fails and asks for the
    slot map again; redis-py marks every connection to every node for a reconnect on each
    reading. Publishing to that user in a tight loop, the map is read (CLUSTER SLOTS, on any
    node) at most once per `SLOTS_REREAD_INTERVAL`, not once per publish."""
    user = users_by_master(redis_cluster, per_master=1)[0][0]
    broker = RedisBroker(redis_cluster.url)
    refused = 0
    try:
        assert all(isinstance(outcome, Delivery) for outcome in await broker.publish_many(round_of([user], 0)))
        master = redis_cluster.masters()[0]
        await asyncio.to_thread(redis_cluster.kill_replicas, master)
        await asyncio.to_thread(redis_cluster.kill_master, 0)
        before = cluster_slots_calls(redis_cluster)
        started = time.monotonic()
        while time.monotonic() - started < 3 * SLOTS_REREAD_INTERVAL:
            (outcome,) = await broker.publish_many(round_of([user], refused + 1))
            assert isinstance(outcome, BrokerUnavailable), outcome
            refused += 1
        elapsed = time.monotonic() - started
    finally:
        await broker.stop()
    reads = cluster_slots_calls(redis_cluster) - before
    assert 2 <= reads <= elapsed / SLOTS_REREAD_INTERVAL + 1, f"{reads} readings in {elapsed:.2f}s, {refused} refused"


def cluster_slots_calls(cluster: RedisCluster) -> int:
    """CLUSTER SLOTS calls answered by every running node of the cluster so far."""
    total = 0
    for port in (node.port for node in cluster.nodes if node.alive):
        with redis.Redis(host="127.0.0.1", port=port) as node:
            total += int(node.info("commandstats").get("cmdstat_cluster|slots", {"calls": 0})["calls"])
    return total


def round_of(users: list[str], n: int) -> list[TaskEvent]:
    """An event for each user, event ids distinct per round."""
    return [TaskEvent(id=f"r{n}", user_id=user, event="task.updated", task={}, occurred_at="t") for user in users]


def assert_only_refused(users: list[str], outcomes: list[Any], refused: str, when: str) -> None:
    """`refused`'s publish was refused (503) and every other user's acknowledged."""
    for user, outcome in zip(users, outcomes, strict=True):
        expected = BrokerUnavailable if user == refused else Delivery
        assert isinstance(outcome, expected), f"{when}, {user}: {outcome!r}"


def slot_of(user: str) -> int:
    return key_slot(user_keys("tasksync", user).head.encode())


def error_replies(port: int, code: str) -> int:
    """How many `code` error replies (MOVED, ASK, TRYAGAIN) the node on `port` has sent."""
    with redis.Redis(host="127.0.0.1", port=port) as node:
        stat = node.info("errorstats").get(f"errorstat_{code}", {"count": 0})
    return int(stat["count"])


async def test_a_slot_resharded_under_load_loses_nothing_and_its_users_follow_it(start_service, redis_cluster):
    """A slot moved to another master as `redis-cli --cluster reshard` moves it (IMPORTING and
    MIGRATING, MIGRATE of its keys, SETSLOT NODE) while events stream to two of its users, through
    TaskSync replicas whose map of the slots is then stale: one user with history on the old
    master, one connected whose first event comes during the move, and one TaskSync has never
    seen (no key anywhere).

    While the slot migrates, every publish script on it is refused by Redis (the event's dedupe
    key is missing where the user's head is: TRYAGAIN; for the unseen user, after an ASK to the
    new master), so its publishers are answered 503 and retry. A read of a user whose keys have
    moved is asked of the new master (ASKING, on the same connection as the read: the new master
    answers it, not with MOVED): a client resuming then is served. Once the slot is the new
    master's, the old one answers MOVED to a third replica, which had no reason to look at the
    slots again (the two others do: Redis unsubscribes their tabs' channels on the old master).
    Every acknowledged event reaches every tab of its user in order, or a resync tells the tab to
    refetch; and events after the move arrive live."""
    a, b = replicas(start_service, redis_cluster)
    c = start_service("--dev", "--broker", redis_cluster.url)
    old_user = users_by_master(redis_cluster, per_master=1)[0][0]
    slot = slot_of(old_user)
    new_user, unseen_user = itertools.islice(
        (u for u in map("late-{}".format, itertools.count()) if slot_of(u) == slot), 2
    )
    users = [old_user, new_user]
    target = next(master for master in redis_cluster.masters() if not master.owns(slot))
    tabs, readers = await open_tabs(users, {"a": a, "b": b})
    publisher = RetryingPublisher([a.http, b.http], give_up_after=60)
    # Through the third replica: it learns the slots before the move, and not again.
    unaware = RetryingPublisher([c.http], give_up_after=10)
    acknowledged: dict[str, list[int]] = {user: [] for user in (*users, unseen_user)}
    numbers = itertools.count()

    async def publish(user: str, through: RetryingPublisher = publisher) -> None:
        n = next(numbers)
        await through.publish({"id": f"m-{n}", "event": "task.updated", "user_id": user, "task": {"n": n}})
        acknowledged[user].append(n)

    during: list[asyncio.Task[None]] = []
    try:
        for _ in range(3):
            await publish(old_user, unaware)
        first = await eventually(lambda: tabs[0].frames[0] if tabs[0].frames else None, what="the first event")
        source = await asyncio.to_thread(begin_slot_migration, redis_cluster, slot, target)
        asked, moved = error_replies(source.port, "ASK"), error_replies(source.port, "MOVED")
        refused = publisher.retries
        during = [asyncio.create_task(publish(user)) for user in (*users, unseen_user)]
        await eventually(lambda: publisher.retries >= refused + 6, what="publishes refused while the slot migrates")
        # The unseen user's event: sent to the old master, which has none of its keys (ASK), then
        # to the new one with ASKING, which refuses it for keys it does not have (TRYAGAIN);
        # without ASKING before it on the same connection it would have answered MOVED.
        assert error_replies(source.port, "ASK") > asked, "the old master did not redirect the unseen user's event"
        assert error_replies(target.port, "TRYAGAIN") > 0, "the new master was not asked (ASKING) for the event"
        await asyncio.to_thread(move_slot_keys, slot, source, target)

        # Other users' batches on the new master, sent together through the replica the client
        # resumes on: it now holds several connections to that master, and an ASKING sent on
        # one of them does not let in a read sent on another.
        elsewhere = users_by_master(redis_cluster, per_master=4)[redis_cluster.masters().index(target)]
        async with httpx.AsyncClient() as http:
            sent = await asyncio.gather(
                *(http.post(b.http + "/v1/events", json=[payload(u) for u in elsewhere]) for _ in range(8))
            )
        assert all(response.status_code == 202 for response in sent)
        resuming = SyncClient(b.ws, user_id=old_user)
        resuming.last_seq, resuming.epoch = first.seq, first.epoch
        connected = await resuming.connect()
        assert connected.resumed
        replayed = [await next_update(resuming) for _ in range(2)]
        assert [u.task["n"] for u in replayed] == acknowledged[old_user][1:3]
        await resuming.close()
        assert not any(task.done() for task in during), "a publish was acknowledged while its slot migrated"

        await asyncio.to_thread(assign_slot, redis_cluster, slot, source, target)
        await asyncio.gather(*during)
        for _ in range(3):
            for user in users:
                await publish(user, unaware)
        assert error_replies(source.port, "MOVED") > moved, "no publish after the move was redirected"
        assert acknowledged[unseen_user], "the unseen user's event was not acknowledged after the move"
        assert redis_cluster.master_of(user_keys("tasksync", unseen_user).head).port == target.port

        await every_tab_gets_its_last(tabs, acknowledged, "every tab's last acknowledged event")
        for tab in tabs:
            assert_every_event_or_a_resync(tab, acknowledged[tab.user])
            # The last three came after the move: live from the new master, in order.
            assert tab.numbers()[-3:] == acknowledged[tab.user][-3:], str(tab)
        print(f"slot {slot} moved {source.port} -> {target.port}; {publisher.retries} publish retries")
    finally:
        await unaware.aclose()
        await close_tabs(tabs, readers + during, publisher)


async def test_the_whole_cluster_stopped_and_started_again_its_users_get_their_events_again(
    start_service, redis_cluster
):
    """Every node of the cluster stopped at once and started again (a power cut): while no node
    answers, each of a replica's pub/sub listeners keeps trying, and once the cluster is back its
    users' events flow again, each tab's with nothing missing. A listener used to end for good
    the first time it asked for the cluster's slots with no node up: redis-py then raises
    RedisClusterException, which is not a RedisError."""
    a = start_service("--dev", "--broker", redis_cluster.url)
    users = [group[0] for group in users_by_master(redis_cluster, per_master=1)]
    tabs, readers = await open_tabs(users, {"a": a})
    publisher = RetryingPublisher([a.http], give_up_after=60)
    acknowledged: dict[str, list[int]] = {user: [] for user in users}
    numbers = itertools.count()

    async def publish_to_all() -> None:
        for user in users:
            n = next(numbers)
            await publisher.publish({"id": f"c-{n}", "event": "task.updated", "user_id": user, "task": {"n": n}})
            acknowledged[user].append(n)

    try:
        await publish_to_all()
        await asyncio.to_thread(redis_cluster.stop)
        # Each master's listener loses its connection, looks for its users' nodes with none up,
        # and tries again: its second retry is logged with the doubled delay.
        await eventually(
            lambda: a.log().count("reconnecting in 0.2s") >= len(users),
            timeout=30,
            what="every listener retrying with the whole cluster down",
        )
        await asyncio.to_thread(redis_cluster.start_again)
        await publish_to_all()

        await every_tab_gets_its_last(tabs, acknowledged, "every tab's event after the cluster came back")
        for tab in tabs:
            assert_every_event_or_a_resync(tab, acknowledged[tab.user])
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
