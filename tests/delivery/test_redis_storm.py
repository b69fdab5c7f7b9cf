"""A reconnect storm on the Redis broker: 320 clients, each its own user, leave replica A at once
and resume on replica B at once, while every user's events keep flowing through A and B. B
subscribes the users whose sockets arrive together together; every client gets every event of
its user once, in order, and no resync."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field

import httpx

from tasksync.client import SyncClient
from tasksync.protocol import ResyncRequired, TaskUpdate
from tests.support.waiting import eventually

CLIENTS = 320
# Events per publish request: a steady flow over all users.
BATCH = 40


@dataclass
class Tab:
    user: str
    client: SyncClient
    numbers: list[int] = field(default_factory=list)
    notices: list[ResyncRequired] = field(default_factory=list)

    async def read(self) -> None:
        while True:
            frame = await self.client.receive()
            if isinstance(frame, TaskUpdate):
                self.numbers.append(frame.task["n"])
            elif isinstance(frame, ResyncRequired):
                self.notices.append(frame)


async def test_a_reconnect_storm_on_the_redis_broker_loses_and_duplicates_nothing(start_service, redis_server):
    a, b = (start_service("--dev", "--broker", redis_server.url) for _ in range(2))
    users = [f"storm-{n}" for n in range(CLIENTS)]
    tabs = [Tab(user, SyncClient(a.ws, user_id=user, open_timeout=60)) for user in users]
    await asyncio.gather(*(tab.client.connect() for tab in tabs))
    readers = [asyncio.create_task(tab.read()) for tab in tabs]
    acknowledged: dict[str, list[int]] = {user: [] for user in users}
    numbers = itertools.count()
    streaming = True

    async def stream(http: httpx.AsyncClient) -> None:
        for replica in itertools.cycle((a, b)):
            if not streaming:
                return
            batch = []
            for _ in range(BATCH):
                n = next(numbers)
                batch.append({"id": f"s-{n}", "event": "task.updated", "user_id": users[n % CLIENTS], "task": {"n": n}})
            answer = await http.post(replica.http + "/v1/events", json=batch)
            assert answer.status_code == 202, answer.text
            for event in batch:
                acknowledged[event["user_id"]].append(event["task"]["n"])

    async with httpx.AsyncClient(timeout=60) as http:
        publishing = asyncio.create_task(stream(http))
        try:
            await eventually(lambda: all(acknowledged.values()), timeout=60, what="every user's first event")
            # The storm: every socket on A closes, then all resume on B at once.
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            await asyncio.gather(*(tab.client.close() for tab in tabs))
            for tab in tabs:
                moved = SyncClient(b.ws, user_id=tab.user, open_timeout=60)
                moved.last_seq, moved.epoch = tab.client.last_seq, tab.client.epoch
                tab.client = moved
            before_storm = sum(map(len, acknowledged.values()))
            connected = await asyncio.gather(*(tab.client.connect() for tab in tabs))
            assert all(frame.resumed for frame in connected)
            readers = [asyncio.create_task(tab.read()) for tab in tabs]
            await eventually(
                lambda: sum(map(len, acknowledged.values())) >= before_storm + 2 * CLIENTS,
                timeout=60,
                what="events after the storm",
            )
        finally:
            streaming = False
            await asyncio.gather(publishing, return_exceptions=True)
    try:
        assert publishing.exception() is None, publishing.exception()

        def all_delivered() -> bool:
            late = [tab.user for tab in tabs if len(tab.numbers) < len(acknowledged[tab.user])]
            assert not late, f"{len(late)} clients still waiting, e.g. {late[0]}"
            return True

        await eventually(all_delivered, timeout=60, what="every acknowledged event")
        for tab in tabs:
            assert tab.notices == [], f"{tab.user} was told to resync"
            assert tab.numbers == acknowledged[tab.user], f"{tab.user}: lost, duplicated or out of order"
        total = sum(map(len, acknowledged.values()))
        print(f"{CLIENTS} clients resumed on B at once; {total} events, 0 lost, 0 duplicated")
    finally:
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await asyncio.gather(*(tab.client.close() for tab in tabs), return_exceptions=True)
