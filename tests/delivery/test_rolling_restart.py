"""A rolling restart under load: two replicas, no balancer, only the clients' reconnect logic."""

from __future__ import annotations

import asyncio
import signal

from tasksync.client import SyncClient
from tasksync.protocol import ResyncRequired, TaskUpdate
from tests.support.publishing import RetryingPublisher
from tests.support.waiting import eventually

USERS = [f"user-{n}" for n in range(5)]
TABS = 2
EVENTS = 300
FAST_BACKOFF = (0.05, 0.1, 0.2, 0.4)


async def test_rolling_restart_delivers_every_event_exactly_once_in_order(start_service, redis_server):
    flags = ("--dev", "--broker", redis_server.url, "--drain-window", "1", "--drain-grace", "5")
    replicas = [start_service(*flags), start_service(*flags)]
    urls = [r.ws for r in replicas]
    clients: list[tuple[str, SyncClient]] = []
    for index, user in enumerate(USERS * TABS):
        # Half the tabs start on each replica; on reconnect each moves on to the other.
        order = urls if index % 2 == 0 else urls[::-1]
        client = SyncClient(order, user_id=user, reconnect=True, backoff=FAST_BACKOFF, max_attempts=100)
        await client.connect()
        clients.append((user, client))

    expected = {user: [n for n in range(EVENTS) if USERS[n % len(USERS)] == user] for user in USERS}
    received: dict[int, list[int]] = {id(c): [] for _, c in clients}
    resyncs = 0

    async def collect(user: str, client: SyncClient) -> None:
        nonlocal resyncs
        while len(received[id(client)]) < len(expected[user]):
            frame = await client.receive()
            if isinstance(frame, TaskUpdate):
                received[id(client)].append(frame.task["n"])
            elif isinstance(frame, ResyncRequired):
                resyncs += 1

    collectors = [asyncio.create_task(collect(user, client)) for user, client in clients]
    publisher = RetryingPublisher([r.http for r in replicas])
    published = 0

    async def stream() -> None:
        nonlocal published
        for n in range(EVENTS):
            event = {"id": f"roll-{n}", "event": "task.updated", "user_id": USERS[n % len(USERS)], "task": {"n": n}}
            await publisher.publish(event)
            published += 1
            await asyncio.sleep(0.01)  # a steady stream across the whole restart

    streaming = asyncio.create_task(stream())
    for replica in replicas:
        before = published
        await eventually(lambda before=before: published >= before + 20, timeout=30, what="load before the restart")
        replica.process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(replica.process.wait, 15) == 0
        replica.start()  # same port, as a rescheduled pod behind a stable address

    await asyncio.wait_for(streaming, timeout=120)
    await asyncio.wait_for(asyncio.gather(*collectors), timeout=60)
    await publisher.aclose()

    reconnects = sum(client.connections - 1 for _, client in clients)
    print(f"published {published} events, {publisher.retries} publish retries, "
          f"{reconnects} client reconnects, {resyncs} resyncs")
    for user, client in clients:
        assert received[id(client)] == expected[user], f"{user}: lost, duplicated or reordered events"
        await client.close()
    assert reconnects >= len(clients)  # every client went through at least one drain
    assert resyncs == 0
