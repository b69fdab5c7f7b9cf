"""Commands pipelined to one Redis in one write, their replies read in one pass.

Every event a replica publishes is one script call, and a batch of them is one pipeline. redis-py's
asyncio pipeline packs each command in Python (copying the command's buffer once per argument),
reads each reply under a timeout of its own and runs every step through its retry and
observability wrappers: together about 15 % of a replica's CPU time when every event crosses
Redis (workload 6 in docs/performance.md). Here hiredis packs the commands (`pack_command`, in C)
and parses the replies straight from the connection's stream.

On a Redis Cluster the same is done per master, on a connection of redis-py's node
(`execute_on_cluster`), and the redirections a master answers with during a slot's migration
(MOVED, ASK, TRYAGAIN) are followed here, with redis-py's map of the slots kept up to date as its
own client does. Not by redis-py's client: redis-py 8.1 sends the ASKING that must precede a
redirected command on whichever pooled connection is free, often not the one the command then
goes on, and the target node answers MOVED back until the retries are used up. A read of a user
whose keys had moved to the new master (a client resuming) failed until the migration ended.

redis-py still provides the connections (pooling, authentication, TLS, protocol negotiation) and
the cluster's topology, and still runs every other command. The connection's stream is the one
internal used (redis_pubsub.py says why that is safe, and where redis-py's range is bounded for it);
the cluster's node map (`nodes_manager`) is read and updated through its own methods.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import hiredis
from redis.asyncio.cluster import PRIMARY, ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError

from .redis_client import UNREACHABLE
from .redis_pubsub import INCOMPLETE, connection_stream, read_replies

# The error replies the broker acts on, by their code, as redis-py's parser names them: a script
# Redis does not hold (it restarted, or its scripts were flushed) is loaded and called again;
# the cluster's redirections are followed (`execute_on_cluster`).
_ERROR_CODES: dict[str, type[ResponseError]] = {
    "NOSCRIPT": NoScriptError,
    "MOVED": MovedError,
    "ASK": AskError,
    "TRYAGAIN": TryAgainError,
    "CLUSTERDOWN": ClusterDownError,
}
# A cluster node did not run the command because another node serves its slot (MOVED), or does
# for keys not here while the slot migrates (ASK), or the command's keys are split by the
# migration in flight (TRYAGAIN): followed here.
_FOLLOWED = (MovedError, AskError, TryAgainError)
# A command follows at most this many redirections, then fails with the last one (its publisher
# is refused and retries): a slot moves once per migration, so more means a cluster changing
# faster than it can be followed. redis-py's client tries 16 times.
MAX_REDIRECTIONS = 5
# TRYAGAIN lasts until the migration has moved the keys of the command (one MIGRATE moves those
# of a user together); the command is sent again after this long.
TRYAGAIN_DELAY = 0.05


def _reply_error(message: str) -> ResponseError:
    code, _, rest = message.partition(" ")
    error = _ERROR_CODES.get(code)
    # Without its code, as redis-py's parser gives it: MovedError and AskError parse the rest.
    return ResponseError(message) if error is None else error(rest)


async def execute(pool: ConnectionPool, commands: Sequence[tuple[Any, ...]], *, timeout: float) -> list[Any]:
    """Each command's reply, in order, on a connection of `pool`: see `execute_on`."""
    connection = await pool.get_connection()
    try:
        return await execute_on(connection, commands, timeout=timeout)
    finally:
        await pool.release(connection)


async def execute_on_node(node: ClusterNode, commands: Sequence[tuple[Any, ...]], *, timeout: float) -> list[Any]:
    """Each command's reply, in order, on a connection of one cluster node: see `execute_on`.
    A redirection is a reply like any other error."""
    connection = node.acquire_connection()
    try:
        return await execute_on(connection, commands, timeout=timeout)
    finally:
        node.release(connection)


async def execute_on(
    connection: AbstractConnection, commands: Sequence[tuple[Any, ...]], *, timeout: float
) -> list[Any]:
    """Each command's reply, in order: an exception instance for an error reply. Raises redis-py's
    ConnectionError or TimeoutError when the connection fails or Redis does not answer every
    command within `timeout` seconds; the connection is then closed, as any of the commands may
    or may not have run."""
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
    return replies


async def execute_on_cluster(
    cluster: RedisCluster, node: ClusterNode, commands: Sequence[tuple[Any, ...]], *, timeout: float
) -> tuple[list[Any], list[int]]:
    """Each command's reply, in order, sent to `node` and redirected as the cluster says (MOVED,
    ASK, TRYAGAIN); and the indexes of the commands that were redirected (those that ran, if they
    ran, on another node than `node`). A reply is an exception instance for an error reply, a
    redirection followed `MAX_REDIRECTIONS` times, or a connection to a redirection's target that
    failed. Raises as `execute_on` for `node`'s own connection: any of the commands may have
    run, and the broker reads the map of the slots again and tries them once more."""
    replies = await execute_on_node(node, commands, timeout=timeout)
    redirected = [i for i, reply in enumerate(replies) if isinstance(reply, _FOLLOWED)]
    # Where each redirected command goes next, and whether it is asked (ASK) there.
    going: dict[int, tuple[ClusterNode, bool]] = {}
    pending = redirected
    for _ in range(MAX_REDIRECTIONS):
        if not pending:
            break
        if any(isinstance(replies[i], TryAgainError) for i in pending):
            await asyncio.sleep(TRYAGAIN_DELAY)
        groups: dict[tuple[str, bool], tuple[ClusterNode, bool, list[int]]] = {}
        for i in pending:
            going[i] = destination = await _destination(cluster, replies[i], going.get(i, (node, False)))
            groups.setdefault((destination[0].name, destination[1]), (*destination, []))[2].append(i)
        answers = await asyncio.gather(
            *(
                _resend(target, asking, [commands[i] for i in indexes], timeout)
                for target, asking, indexes in groups.values()
            )
        )
        for (_, _, indexes), answer in zip(groups.values(), answers, strict=True):
            for i, reply in zip(indexes, answer, strict=True):
                replies[i] = reply
        pending = [i for i in pending if isinstance(replies[i], _FOLLOWED)]
    return replies, redirected


async def _destination(
    cluster: RedisCluster, redirection: MovedError | AskError | TryAgainError, last: tuple[ClusterNode, bool]
) -> tuple[ClusterNode, bool]:
    """Where a redirected command goes next, and whether it is to be asked there (ASKING)."""
    if isinstance(redirection, MovedError):
        # The slot has moved for good: the map of the slots is updated for every later command,
        # as redis-py's client does on MOVED.
        await cluster.nodes_manager.move_slot(redirection)
        return cluster.nodes_manager.get_node_from_slot(redirection.slot_id), False
    if isinstance(redirection, AskError):
        # For this command only; the map stays: the slot is still the migrating node's.
        target = cluster.get_node(host=redirection.host, port=redirection.port)
        if target is None:
            # A master the map does not know yet (a new node being filled with its first slots),
            # added as redis-py adds one a MOVED names.
            target = ClusterNode(redirection.host, redirection.port, PRIMARY, **cluster.nodes_manager.connection_kwargs)
            cluster.nodes_manager.set_nodes(cluster.nodes_manager.nodes_cache, {target.name: target})
        return target, True
    return last


async def _resend(node: ClusterNode, asking: bool, commands: list[tuple[Any, ...]], timeout: float) -> list[Any]:
    """The commands' replies from `node`, each preceded by ASKING when `asking` (ASKING lets only
    the next command on the same connection in: sent in the same write, it is)."""
    sent = [part for command in commands for part in (("ASKING",), command)] if asking else commands
    try:
        replies = await execute_on_node(node, sent, timeout=timeout)
    except UNREACHABLE as exc:
        return [exc] * len(commands)
    return replies[1::2] if asking else replies
