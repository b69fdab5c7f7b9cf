"""Commands pipelined to one Redis in one write, their replies read in one pass.

Every event a replica publishes is one script call, and a batch of them is one pipeline. redis-py's
asyncio pipeline packs each command in Python (copying the command's buffer once per argument),
reads each reply under a timeout of its own and runs every step through its retry and
observability wrappers: together about 15 % of a replica's CPU time when every event crosses
Redis (workload 6 in docs/performance.md). Here hiredis packs the commands (`pack_command`, in C)
and parses the replies straight from the connection's stream.

redis-py still provides the connection (pooling, authentication, TLS, protocol negotiation) and
still runs every other command. The stream is the one internal used (redis_pubsub.py says why
that is safe, and where redis-py's range is bounded for it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import hiredis
from redis.asyncio.connection import ConnectionPool
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .redis_pubsub import INCOMPLETE, connection_stream, read_replies


def _reply_error(message: str) -> ResponseError:
    # The one error reply the broker acts on: a script Redis does not hold (it restarted, or
    # its scripts were flushed), loaded and called again.
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    return ResponseError(message)


async def execute(pool: ConnectionPool, commands: Sequence[tuple[Any, ...]], *, timeout: float) -> list[Any]:
    """Each command's reply, in order: an exception instance for an error reply. Raises redis-py's
    ConnectionError or TimeoutError when the connection fails or Redis does not answer every
    command within `timeout` seconds; the connection is then closed, as any of the commands may
    or may not have run."""
    connection = await pool.get_connection()
    try:
        await connection.send_packed_command(b"".join([hiredis.pack_command(command) for command in commands]))
        # Taken once the commands are sent: redis-py reconnects a connection whose health check
        # (a PING after `HEALTH_CHECK_INTERVAL` idle) failed, and the stream is then a new one.
        stream = connection_stream(connection)
        parser = hiredis.Reader(replyError=_reply_error, notEnoughData=INCOMPLETE)
        replies: list[Any] = []
        async with asyncio.timeout(timeout):
            while len(replies) < len(commands):
                replies += await read_replies(stream, parser)
    except TimeoutError:
        await connection.disconnect()
        raise RedisTimeoutError(f"Redis did not answer {len(commands)} commands within {timeout:g}s") from None
    except BaseException:
        await connection.disconnect()
        raise
    finally:
        await pool.release(connection)
    return replies
