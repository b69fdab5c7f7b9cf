"""One Redis connection in subscribe mode, read without redis-py's per-message machinery.

For every message, redis-py's `PubSub.listen()` runs a health check, a retrying command wrapper
with its observability hooks, a read under a timeout of its own, and a push handler that formats
the whole message for a debug log line nobody sees: about a fifth of a replica's CPU time when
every event crosses Redis (workload 6 in docs/performance.md). `PubSubConnection` takes a
connection from redis-py, which connects, authenticates, sets up TLS and negotiates the protocol,
then sends its (S)SUBSCRIBE and (S)UNSUBSCRIBE commands itself and parses every reply a read
brings with one hiredis reader.

Its liveness check is its own too: after `idle_timeout` seconds without a byte from Redis it
sends a PING, and a connection that stays silent for another `idle_timeout` is declared lost, so
a Redis that vanished without closing the connection is noticed (redis-py's `listen()` only
checks when a message arrives).

The one internal of redis-py used is the connection's stream reader (`_reader`); redis-py's range
in pyproject.toml is bounded for it, and `open()` fails with a plain error if it is missing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

# Bytes asked of the socket per read: under load one read brings many messages.
READ_SIZE = 1 << 16
# What a hiredis reader gives while no complete reply is buffered: not its default, False, which
# a reply can be (RESP3 booleans).
INCOMPLETE = object()


def connection_stream(connection: AbstractConnection) -> asyncio.StreamReader:
    """The stream a connected redis-py connection reads from. Nothing is waiting in it or in
    redis-py's parser when the pool hands the connection out: the pool checks (`can_read`)."""
    stream = getattr(connection, "_reader", None)
    if not isinstance(stream, asyncio.StreamReader):
        raise RuntimeError(
            "this redis-py has no asyncio stream on its connections (`_reader`): install the "
            "range pyproject.toml names for the redis extra"
        )
    return stream


async def read_replies(stream: asyncio.StreamReader, parser: hiredis.Reader) -> list[Any]:
    """Every reply the next read from `stream` completes, parsed by `parser` (which keeps a reply
    that arrives in parts until it is whole). Raises redis-py's ConnectionError at end of stream."""
    data = await stream.read(READ_SIZE)
    if not data:
        raise RedisConnectionError("Redis closed the connection")
    parser.feed(data)
    replies = []
    while (reply := parser.gets()) is not INCOMPLETE:
        replies.append(reply)
    return replies


class PubSubConnection:
    """A connection from `client`'s pool that subscribes to channels: plain ones, or sharded
    ones on a Redis Cluster. `replies()` yields, per read, the replies and pushes it brought as
    hiredis parses them: lists such as `[b"message", channel, data]`."""

    def __init__(self, client: Redis, *, idle_timeout: float) -> None:
        self._client = client
        self._idle_timeout = idle_timeout
        self._connection: AbstractConnection | None = None
        self._stream: asyncio.StreamReader | None = None

    async def open(self) -> None:
        connection = self._connection = await self._client.connection_pool.get_connection()
        self._stream = connection_stream(connection)

    async def subscribe(self, channels: Collection[str | bytes], *, sharded: bool) -> None:
        """Send one SUBSCRIBE (SSUBSCRIBE with `sharded`: the channels of one hash slot) without
        waiting for Redis' confirmations, which `replies()` yields."""
        await self._send("SSUBSCRIBE" if sharded else "SUBSCRIBE", channels)

    async def unsubscribe(self, channels: Collection[str | bytes], *, sharded: bool) -> None:
        await self._send("SUNSUBSCRIBE" if sharded else "UNSUBSCRIBE", channels)

    async def _send(self, command: str, channels: Collection[str | bytes]) -> None:
        if self._connection is None:
            raise RedisConnectionError("the pub/sub connection is closed")
        await self._connection.send_command(command, *channels, check_health=False)

    async def replies(self) -> AsyncIterator[list[Any]]:
        """Yield, per read, every complete reply it brought. Raises redis-py's ConnectionError
        when the connection ends or stays silent through a PING, ResponseError for an error
        reply."""
        connection, stream = self._connection, self._stream
        if connection is None or stream is None:
            raise RedisConnectionError("the pub/sub connection is closed")
        parser = hiredis.Reader(replyError=ResponseError, notEnoughData=INCOMPLETE)
        pinged = False
        while True:
            try:
                async with asyncio.timeout(self._idle_timeout):
                    replies = await read_replies(stream, parser)
            except TimeoutError:
                if pinged:
                    raise RedisConnectionError(f"Redis sent nothing for {2 * self._idle_timeout:g}s") from None
                pinged = True
                await connection.send_command("PING", check_health=False)
                continue
            pinged = False
            for reply in replies:
                if isinstance(reply, ResponseError):
                    raise reply
            if replies:
                yield replies

    async def close(self) -> None:
        """Disconnect and hand the connection back to its pool, which reconnects it if it is
        ever used again (a subscribed connection is no use to anyone else)."""
        connection, self._connection, self._stream = self._connection, None, None
        if connection is not None:
            await connection.disconnect()
            await self._client.connection_pool.release(connection)
