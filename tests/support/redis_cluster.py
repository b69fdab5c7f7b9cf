"""A real Redis Cluster for the tests: 3 masters with one replica each, on loopback ports, in a
temporary directory removed afterwards.

It is started by bench/redis_cluster.py, the code the benchmarks start theirs with, so the
cluster the tests rely on is the one the benchmarks measure. See `RedisCluster` there for what it
offers: `url` (a `redis+cluster://` broker), `masters()`, `master_of(key)`, `kill_master(i)`,
`wait_for_failover(killed)`, `replicas_paused(master)`, `kill_replicas(master)`, `client()`.
Resharding a slot by hand, as an operator would: `begin_slot_migration`, `move_slot_keys`,
`assign_slot`.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from bench.redis_cluster import HOST, ClusterFailed, Master, RedisCluster

__all__ = [
    "ClusterFailed",
    "Master",
    "RedisCluster",
    "assign_slot",
    "begin_slot_migration",
    "move_slot_keys",
    "running_redis_cluster",
]


@contextmanager
def running_redis_cluster() -> Iterator[RedisCluster]:
    """A healthy cluster for the `with` block; every node stopped and its directory removed when
    the block ends, however it ends."""
    directory = Path(tempfile.mkdtemp(prefix="tasksync-redis-cluster-"))
    cluster = RedisCluster(directory)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)


def _node(port: int) -> redis.Redis:
    return redis.Redis(host=HOST, port=port, decode_responses=True)


def _node_id(port: int) -> str:
    with _node(port) as node:
        return str(node.execute_command("CLUSTER", "MYID"))


def begin_slot_migration(cluster: RedisCluster, slot: int, to: Master) -> Master:
    """Start moving `slot` to master `to`, as `redis-cli --cluster reshard` does: the target
    imports it, its master migrates it. Until `assign_slot`, the master still answers for the
    slot's keys it holds and redirects (ASK) commands on keys it does not. Returns the
    master the slot is moving from."""
    source = next(master for master in cluster.masters() if master.owns(slot))
    with _node(to.port) as target:
        target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", _node_id(source.port))
    with _node(source.port) as node:
        node.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", _node_id(to.port))
    return source


def move_slot_keys(slot: int, source: Master, to: Master) -> None:
    """Move every key of `slot` from `source` to `to` (MIGRATE, a hundred at a time); the slot
    stays the source's, migrating, until `assign_slot`."""
    with _node(source.port) as node:
        while keys := node.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            node.execute_command("MIGRATE", HOST, to.port, "", 0, 5000, "KEYS", *keys)


def assign_slot(cluster: RedisCluster, slot: int, source: Master, to: Master) -> None:
    """End the migration: `to` serves `slot`, told to every master (the target first, as Redis'
    cluster tutorial says), and every node agrees."""
    target_id = _node_id(to.port)
    others = [master for master in cluster.masters() if master.port not in (source.port, to.port)]
    for master in (to, source, *others):
        with _node(master.port) as node:
            node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
    cluster.wait_until_healthy()
