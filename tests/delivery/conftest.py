"""Fixtures for the delivery tests: the service on either broker, and a Redis Cluster."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.redis_cluster import RedisCluster, running_redis_cluster


@pytest.fixture(params=["memory", "redis"])
def broker_service(request, start_service):
    """`start(*flags)` starts the service on the memory broker or on a real Redis."""
    if request.param == "memory":
        return lambda *flags: start_service("--dev", *flags)
    redis_server = request.getfixturevalue("redis_server")
    return lambda *flags: start_service("--dev", "--broker", redis_server.url, *flags)


@pytest.fixture
def redis_cluster() -> Iterator[RedisCluster]:
    """A real Redis Cluster (3 masters, one replica each) for this test, stopped and removed
    afterwards. A module that only reads from one can share it: `running_redis_cluster()`."""
    with running_redis_cluster() as cluster:
        yield cluster
