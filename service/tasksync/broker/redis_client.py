"""The redis-py client a `TASKSYNC_BROKER` URL names: one Redis, or a Redis Cluster.

- `redis://[user:password@]host:port/db`, `rediss://...` (TLS), `unix:///path`: one Redis (or
  the master a Sentinel-aware proxy points at), through redis-py's asyncio client.
- `redis+cluster://[user:password@]host:port[,host:port...]`, `rediss+cluster://...` (TLS): a
  Redis Cluster, through redis-py's asyncio `RedisCluster`, which learns the cluster's slots
  from any of the nodes listed and follows MOVED, ASK and failovers.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

from redis import asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException, RedisError

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SCHEMES = ("redis", "rediss", "unix", *CLUSTER_SCHEMES)

# Script pipelines a replica runs at once (the broker queues the others): each holds one
# connection, per node on a cluster. redis-py's cluster client does not queue for a connection:
# past its limit it raises, and its pipeline's retry then closes the whole client, failing every
# call in flight on every node. So the broker bounds its calls below the pool's size.
MAX_CALLS = 64
# Connections beyond those: the pub/sub listener, readiness pings, topology refreshes.
SPARE_CONNECTIONS = 8
# Connections to Redis per replica (per node on a cluster), and how long a call waits for one to
# be free before it counts as Redis being unavailable.
MAX_CONNECTIONS = MAX_CALLS + SPARE_CONNECTIONS
POOL_TIMEOUT = 5.0
# Seconds a connection may sit unused before redis-py PINGs it before its next command; also how
# long the pub/sub connection (redis_pubsub.py) may hear nothing before it PINGs Redis.
HEALTH_CHECK_INTERVAL = 5.0
# Seconds a command's reply may take (redis_pipeline.py: a whole pipeline's replies).
SOCKET_TIMEOUT = 2.0
# What a call to Redis raises when Redis cannot be reached. redis-py's cluster client raises
# RedisClusterException, which is not a RedisError, when no node it knows answers (the whole
# cluster down): caught as anything else that leaves Redis unreachable, a listener tries again.
UNREACHABLE = (RedisError, RedisClusterException, OSError)
_TIMEOUTS: dict[str, Any] = {
    "socket_connect_timeout": 1.0,
    "socket_timeout": SOCKET_TIMEOUT,
    "health_check_interval": HEALTH_CHECK_INTERVAL,
}


def is_cluster_url(url: str) -> bool:
    return url.split("://", 1)[0] in CLUSTER_SCHEMES


def single_redis(url: str) -> aioredis.Redis:
    # A burst of handshakes (a reconnect storm) reads many users' heads at once: the calls
    # beyond the pool's connections wait for one instead of failing.
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=MAX_CONNECTIONS, timeout=POOL_TIMEOUT, **_TIMEOUTS
    )
    return aioredis.Redis(connection_pool=pool)


def redis_cluster(url: str) -> RedisCluster:
    """A cluster client for a `redis+cluster://` URL. Raises ValueError for a URL without nodes."""
    parts = urlsplit(url)
    hosts = parts.netloc.rpartition("@")[2]
    nodes = []
    for address in filter(None, hosts.split(",")):
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"{url!r}: expected host:port[,host:port...], got {address!r}")
        nodes.append(ClusterNode(host.strip("[]"), int(port)))
    if not nodes:
        raise ValueError(f"{url!r} names no cluster node")
    return RedisCluster(
        startup_nodes=nodes,
        **_credentials(url),
        # A node that is down costs only the users of its slots: the others' commands go on.
        require_full_coverage=False,
        max_connections=MAX_CONNECTIONS,
        **_TIMEOUTS,
    )


def node_redis(url: str, host: str, port: int) -> aioredis.Redis:
    """A client of one node of the cluster a `redis+cluster://` URL names, with its credentials:
    for the pub/sub connection to the node that serves a set of channels."""
    return aioredis.Redis(host=host, port=port, **_credentials(url), **_TIMEOUTS)


def _credentials(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    username, _, password = parts.netloc.rpartition("@")[0].partition(":")
    return {
        "username": unquote(username) or None,
        "password": unquote(password) or None,
        "ssl": parts.scheme == "rediss+cluster",
    }
