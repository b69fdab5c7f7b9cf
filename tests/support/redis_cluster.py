"""A real Redis Cluster for the tests: 3 masters with one replica each, on loopback ports, in a
temporary directory removed afterwards.

It is started by bench/redis_cluster.py, the code the benchmarks start theirs with, so the
cluster the tests rely on is the one the benchmarks measure. See `RedisCluster` there for what it
offers: `url` (a `redis+cluster://` broker), `masters()`, `master_of(key)`, `kill_master(i)`,
`wait_for_failover(killed)`, `client()`.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.redis_cluster import ClusterFailed, Master, RedisCluster

__all__ = ["ClusterFailed", "Master", "RedisCluster", "running_redis_cluster"]


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
