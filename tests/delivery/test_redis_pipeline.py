"""Script pipelines written and read with hiredis (broker/redis_pipeline.py) on a real Redis:
every reply in order with error replies in their place, a Redis that does not answer in time
costs the caller a timeout and the pool nothing, and scripts Redis lost are loaded again."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis
from redis import asyncio as aioredis
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tasksync.broker.redis import RedisBroker
from tasksync.broker.redis_client import single_redis
from tasksync.broker.redis_pipeline import execute
from tasksync.events import TaskEvent


@pytest.fixture
def admin(redis_server) -> Iterator[redis.Redis]:
    with redis.Redis(port=redis_server.port) as client:
        yield client


@pytest.fixture
async def client(redis_server) -> AsyncIterator[aioredis.Redis]:
    client = single_redis(redis_server.url)
    yield client
    await client.aclose()


async def test_every_reply_comes_in_order_with_errors_in_their_place(client, admin):
    admin.set("text", "not a number")
    # Long values: the replies span many reads.
    value = "v" * 1_000
    commands = [("SET", f"k{n}", value) for n in range(300)]
    commands += [("INCR", "text"), ("EVALSHA", "0" * 40, 0), ("EVAL", "return false", 0), ("GET", "k7")]
    replies = await execute(client.connection_pool, commands, timeout=5)
    assert replies[:300] == [b"OK"] * 300
    incr, noscript, false, get = replies[300:]
    assert isinstance(incr, ResponseError) and not isinstance(incr, NoScriptError)
    assert isinstance(noscript, NoScriptError)
    assert false is None and get == value.encode()


async def test_a_redis_that_does_not_answer_in_time_costs_a_timeout_and_frees_the_connection(client, admin):
    pool = client.connection_pool
    # A connection already made and handed back, as under load: the pause holds its commands.
    assert await execute(pool, [("PING",)], timeout=5) == [b"PONG"]
    admin.execute_command("CLIENT", "PAUSE", 1_500, "ALL")
    with pytest.raises(RedisTimeoutError, match=r"did not answer 2 commands within 0\.3s"):
        await execute(pool, [("SET", "a", "1"), ("GET", "a")], timeout=0.3)
    # Back in the pool, disconnected: its late replies cannot answer the next caller's commands.
    assert not pool._in_use_connections
    assert await execute(pool, [("SET", "b", "2"), ("GET", "b")], timeout=5) == [b"OK", b"2"]


async def test_a_connection_redis_py_reconnects_before_sending_is_read_from_its_new_stream(client):
    pool = client.connection_pool
    assert await execute(pool, [("PING",)], timeout=5) == [b"PONG"]
    (connection,) = pool._available_connections

    check_health = connection.check_health

    async def reconnect_as_after_a_failed_ping() -> None:
        # What redis-py does when the PING of its health check fails: a new socket, a new stream.
        connection.check_health = check_health
        await connection.disconnect()
        await connection.connect()

    connection.check_health = reconnect_as_after_a_failed_ping
    assert await execute(pool, [("SET", "c", "3"), ("GET", "c")], timeout=5) == [b"OK", b"3"]


def _event(event_id: str) -> TaskEvent:
    return TaskEvent(id=event_id, user_id="ann", event="task.updated", task={}, occurred_at="t")


async def test_a_publish_after_redis_lost_its_scripts_loads_them_again(redis_server, admin):
    broker = RedisBroker(redis_server.url)
    await broker.start()
    try:
        first = await broker.publish(_event("e-1"))
        admin.script_flush()
        second = await broker.publish(_event("e-2"))
        assert first is not None and second is not None
        assert (second.seq, second.epoch) == (first.seq + 1, first.epoch)
    finally:
        await broker.stop()
