"""Redis stopped for a few seconds during a publish stream."""

from __future__ import annotations

import asyncio

import httpx

from tasksync.client import SyncClient
from tasksync.protocol import TaskUpdate
from tests.support.events import cloudevent, payload
from tests.support.publishing import RetryingPublisher
from tests.support.waiting import eventually

EVENTS = 150
USERS = ("ann", "ben")


async def collect(client: SyncClient, expected: int, into: list[TaskUpdate]) -> None:
    while len(into) < expected:
        frame = await client.receive()
        if isinstance(frame, TaskUpdate):
            into.append(frame)


def ready(service) -> bool:
    return httpx.get(service.http + "/health/ready", timeout=2).status_code == 200


async def test_redis_outage_loses_nothing_keeps_sockets_and_toggles_readiness(start_service, redis_server):
    service = start_service("--dev", "--broker", redis_server.url)
    clients = {user: SyncClient(service.ws, user_id=user) for user in USERS}
    for client in clients.values():
        await client.connect()
    received: dict[str, list[TaskUpdate]] = {user: [] for user in USERS}
    collectors = [
        asyncio.create_task(collect(clients[user], EVENTS // len(USERS), received[user])) for user in USERS
    ]
    publisher = RetryingPublisher([service.http])

    async def stream() -> None:
        for n in range(EVENTS):
            user = USERS[n % len(USERS)]
            await publisher.publish({"id": f"evt-{n}", "event": "task.updated", "user_id": user, "task": {"n": n}})
            await asyncio.sleep(0.01)  # a steady stream, so the outage falls in the middle of it

    streaming = asyncio.create_task(stream())
    await eventually(lambda: sum(map(len, received.values())) >= EVENTS // 4, what="a quarter delivered")
    redis_server.kill()
    await eventually(lambda: not ready(service), timeout=10, what="readiness false while Redis is down")
    # Dapr is told to retry, and an HTTP publisher to come back later.
    async with httpx.AsyncClient() as http:
        dapr = await http.post(service.http + "/dapr/task-events", json=cloudevent(payload("ann", n=-1)))
        direct = await http.post(service.http + "/v1/events", json=payload("ann", n=-1))
    assert dapr.status_code == 200 and dapr.json() == {"status": "RETRY"}
    assert direct.status_code == 503 and direct.headers["retry-after"]
    # The outage lasts until the stream has been refused a while (about a second of retries).
    before = publisher.retries
    await eventually(lambda: publisher.retries >= before + 20, timeout=30, what="the stream refused during the outage")
    redis_server.restart()
    await eventually(lambda: ready(service), timeout=20, what="readiness back after Redis returns")

    await asyncio.wait_for(streaming, timeout=60)
    await asyncio.wait_for(asyncio.gather(*collectors), timeout=30)
    await publisher.aclose()

    for user in USERS:
        numbers = [update.task["n"] for update in received[user]]
        assert numbers == [n for n in range(EVENTS) if USERS[n % len(USERS)] == user], user
        assert [u.seq for u in received[user]] == list(range(1, EVENTS // len(USERS) + 1))
        # The socket survived: never reconnected.
        assert clients[user].connections == 1
    print(f"publisher retried {publisher.retries} times during the outage")
    assert publisher.retries > 0
    for client in clients.values():
        await client.close()
