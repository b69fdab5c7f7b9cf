"""The broker's pub/sub connection (broker/redis_pubsub.py) on a real Redis: the replies of a
read come back parsed and in order, an idle connection Redis still answers stays up, and one
that goes silent is declared lost instead of waiting forever."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis
from redis import asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from tasksync.broker.redis_pubsub import PubSubConnection
from tests.support.waiting import eventually

IDLE_TIMEOUT = 0.2


@pytest.fixture
def admin(redis_server) -> Iterator[redis.Redis]:
    with redis.Redis(port=redis_server.port) as client:
        yield client


@pytest.fixture
async def subscribed(redis_server) -> AsyncIterator[tuple[PubSubConnection, AsyncIterator[list[Any]]]]:
    """A connection subscribed to channel `a`, its confirmation already read."""
    client = aioredis.Redis(port=redis_server.port)
    connection = PubSubConnection(client, idle_timeout=IDLE_TIMEOUT)
    await connection.open()
    await connection.subscribe(["a"], sharded=False)
    replies = connection.replies()
    assert await anext(replies) == [[b"subscribe", b"a", 1]]
    yield connection, replies
    await connection.close()
    await client.aclose()


async def _collect(replies: AsyncIterator[list[Any]], count: int) -> list[Any]:
    got: list[Any] = []
    async with asyncio.timeout(10):
        while len(got) < count:
            got.extend(await anext(replies))
    return got


async def test_messages_come_parsed_and_in_order_with_the_subscription_replies(subscribed, admin):
    connection, replies = subscribed
    await connection.subscribe(["b", "c"], sharded=False)
    for n in range(50):
        admin.publish("a" if n % 2 else "b", f"m{n}")
    got = await _collect(replies, 2 + 50)
    assert got[:2] == [[b"subscribe", b"b", 2], [b"subscribe", b"c", 3]]
    assert got[2:] == [[b"message", b"a" if n % 2 else b"b", f"m{n}".encode()] for n in range(50)]
    await connection.unsubscribe(["a"], sharded=False)
    admin.publish("a", "not delivered")
    admin.publish("c", "delivered")
    assert await _collect(replies, 2) == [[b"unsubscribe", b"a", 2], [b"message", b"c", b"delivered"]]


async def _next_message(replies: AsyncIterator[list[Any]]) -> list[Any]:
    """The next published message, past the answers to liveness PINGs."""
    while True:
        for reply in await anext(replies):
            if isinstance(reply, list) and reply[0] == b"message":
                return reply


async def test_an_idle_connection_redis_answers_stays_up(subscribed, admin):
    _, replies = subscribed
    reading = asyncio.create_task(_next_message(replies))
    pings = int(admin.info("commandstats").get("cmdstat_ping", {}).get("calls", 0))

    def pinged_three_more_times() -> bool:
        assert not reading.done(), reading
        return int(admin.info("commandstats")["cmdstat_ping"]["calls"]) >= pings + 3

    # Each PING came after a silent `IDLE_TIMEOUT`; a connection declared lost would have ended
    # the reading.
    await eventually(pinged_three_more_times, timeout=10, what="three liveness PINGs")
    admin.publish("a", "still here")
    async with asyncio.timeout(10):
        assert await reading == [b"message", b"a", b"still here"]


async def test_a_redis_that_goes_silent_is_declared_lost(subscribed, admin):
    _, replies = subscribed
    # Redis holds every client's commands, the PING included, for longer than two idle timeouts:
    # the connection hears nothing.
    admin.execute_command("CLIENT", "PAUSE", 2_000, "ALL")
    async with asyncio.timeout(1.5):
        with pytest.raises(RedisConnectionError, match="sent nothing"):
            await _next_message(replies)
