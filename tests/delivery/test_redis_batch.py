"""A batch of events costs a bounded number of Redis round trips, and every event's outcome is
still its own: dedupe by id per user (inside a batch and across batches), offsets in order per
user, two users interleaved.

Round trips are counted by Redis itself: `total_reads_processed` (INFO stats) grows by one each
time Redis reads from a client socket, and every round trip is at least one read. A pipeline is
read 16 KiB at a time, so a 100-event batch (about 50 KiB) costs a handful of reads, however its
events fall; one round trip per event would cost at least 100. The counter is global: the
reading of it costs one read, on a connection kept open for the test.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
import redis

from tasksync.client import SyncClient
from tasksync.protocol import TaskUpdate
from tests.support.events import bulk, cloudevent

BATCH = 100
# Socket reads a 100-event batch may cost: the pipeline's few 16 KiB reads, the INFO that reads
# the counter, a health-check PING. One round trip per event would cost at least BATCH.
ROUND_TRIP_BOUND = 20
USERS = ("ann", "ben")


@pytest.fixture
def admin(redis_server) -> Iterator[redis.Redis]:
    """One connection to Redis for the whole test, so reading the counters costs one round trip."""
    with redis.Redis(port=redis_server.port) as client:
        yield client


def requests_read(admin: redis.Redis) -> int:
    return int(admin.info("stats")["total_reads_processed"])


def event(n: int, *, event_id: str | None = None) -> dict:
    user = USERS[n % 2]
    return {"id": event_id or f"e-{n}", "event": "task.updated", "user_id": user, "task": {"n": n}}


async def updates(client: SyncClient, count: int) -> list[TaskUpdate]:
    got: list[TaskUpdate] = []
    async with asyncio.timeout(30):
        while len(got) < count:
            frame = await client.receive()
            if isinstance(frame, TaskUpdate):
                got.append(frame)
    return got


async def test_a_batch_on_v1_events_costs_a_bounded_number_of_round_trips_and_keeps_every_outcome(
    start_service, redis_server, admin
):
    service = start_service("--dev", "--broker", redis_server.url)
    first = [event(n) for n in range(BATCH)]
    # Inside the batch: ann's e-0 again (a duplicate), and ben's own event with ann's id e-2
    # (not a duplicate: dedupe is per user).
    first[50] = event(0)
    first[51] = {**event(51), "id": "e-2"}
    # Across batches: the second batch repeats four of the first's events, then adds new ones.
    second = [first[10], first[11], event(200), first[12], event(201), first[13]]
    async with SyncClient(service.ws, user_id="ann") as ann, SyncClient(service.ws, user_id="ben") as ben:
        async with httpx.AsyncClient(timeout=30) as http:
            before = requests_read(admin)
            answer = await http.post(service.http + "/v1/events", json=first)
            batch_reads = requests_read(admin) - before
            assert answer.status_code == 202, answer.text
            assert answer.json() == {"accepted": BATCH - 1, "duplicates": 1}
            answer = await http.post(service.http + "/v1/events", json=second)
            assert answer.json() == {"accepted": 2, "duplicates": 4}

            # The same path one event per request: the counter sees every round trip.
            before = requests_read(admin)
            for n in range(300, 300 + 20):
                assert (await http.post(service.http + "/v1/events", json=event(n))).status_code == 202
            single_reads = requests_read(admin) - before
        print(f"socket reads: {batch_reads} for a {BATCH}-event batch, {single_reads} for 20 single events")
        assert batch_reads <= ROUND_TRIP_BOUND
        assert single_reads >= 20

        accepted = [e for i, e in enumerate(first) if i != 50] + [second[2], second[4]]
        accepted += [event(n) for n in range(300, 320)]
        for user, client in (("ann", ann), ("ben", ben)):
            wanted = [e["task"]["n"] for e in accepted if e["user_id"] == user]
            got = await updates(client, len(wanted))
            assert [u.task["n"] for u in got] == wanted, user
            assert [u.seq for u in got] == list(range(1, len(wanted) + 1)), user
            assert len({u.epoch for u in got}) == 1


async def test_a_dapr_bulk_delivery_costs_a_bounded_number_of_round_trips_and_answers_each_entry(
    start_service, redis_server, admin
):
    service = start_service("--dev", "--broker", redis_server.url)
    entries = [cloudevent(event(n), event_id=f"c-{n}") for n in range(BATCH)]
    entries[7] = {"specversion": "1.0", "id": "bad", "data": {"event": "task.updated"}}  # no user: DROP
    entries[8] = cloudevent(event(6), event_id="c-6")  # ann's c-6 again: a duplicate, SUCCESS
    async with SyncClient(service.ws, user_id="ann") as ann:
        async with httpx.AsyncClient(timeout=30) as http:
            before = requests_read(admin)
            answer = await http.post(service.http + "/dapr/task-events", json=bulk(entries))
            reads = requests_read(admin) - before
        statuses = {s["entryId"]: s["status"] for s in answer.json()["statuses"]}
        assert statuses == {f"entry-{i}": "DROP" if i == 7 else "SUCCESS" for i in range(BATCH)}
        assert reads <= ROUND_TRIP_BOUND, reads
        wanted = [n for n in range(0, BATCH, 2) if n != 8]
        assert [u.task["n"] for u in await updates(ann, len(wanted))] == wanted


def script_calls(admin: redis.Redis) -> int:
    """Lua script calls Redis has run: every publish and every history or head read is one."""
    stats = admin.info("commandstats")
    return sum(int(stat["calls"]) for name, stat in stats.items() if name.startswith(("cmdstat_eval", "cmdstat_fcall")))


async def test_a_resume_from_the_newest_event_of_a_watched_user_reads_nothing_from_redis(
    start_service, redis_server, admin
):
    """Another tab of a user this replica watches, resuming from the newest event: the replica
    is owed every later event anyway, so it answers without a round trip (a reconnect storm is
    made of such resumes). The live events after it still arrive, once each."""
    service = start_service("--dev", "--broker", redis_server.url)
    async with SyncClient(service.ws, user_id="ann") as watching, httpx.AsyncClient(timeout=30) as http:
        assert (await http.post(service.http + "/v1/events", json=[event(0), event(2)])).status_code == 202
        newest = (await updates(watching, 2))[-1]
        resuming = SyncClient(service.ws, user_id="ann")
        resuming.last_seq, resuming.epoch = newest.seq, newest.epoch
        before = script_calls(admin)
        connected = await resuming.connect()
        try:
            assert script_calls(admin) == before
            assert (connected.resumed, connected.seq) == (True, newest.seq)
            assert (await http.post(service.http + "/v1/events", json=event(4))).status_code == 202
            for tab in (watching, resuming):
                [live] = await updates(tab, 1)
                assert (live.seq, live.epoch, live.task) == (newest.seq + 1, newest.epoch, {"n": 4})
        finally:
            await resuming.close()
