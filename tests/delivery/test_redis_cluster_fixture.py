"""The Redis Cluster the tests and benchmarks start (tests/support/redis_cluster.py): 3 masters
with one replica each, keys spread over all three, a killed master replaced by its replica, and
nothing left running once it is stopped."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

import bench.redis_cluster as redis_cluster_module
from tests.support.redis_cluster import ClusterFailed, RedisCluster, running_redis_cluster

# Keys shaped like the broker's: every key of a user shares the `{user}` hash tag's slot.
USERS = [f"u{n}" for n in range(60)]


def user_key(user: str) -> str:
    return f"{{{user}}}:offset"


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def shared_cluster() -> Iterator[RedisCluster]:
    """One cluster for the tests that only read its layout or write keys of their own."""
    with running_redis_cluster() as cluster:
        yield cluster


def test_the_cluster_has_three_masters_with_one_replica_each_covering_every_slot(shared_cluster):
    masters = shared_cluster.masters()

    assert len(masters) == 3
    assert all(len(master.replicas) == 1 for master in masters)
    ports = [master.port for master in masters] + [master.replicas[0] for master in masters]
    assert sorted(ports) == sorted(port for _, port in shared_cluster.startup_nodes)
    assert sum(last - first + 1 for master in masters for first, last in master.slots) == REDIS_CLUSTER_HASH_SLOTS
    assert set(shared_cluster.url.removeprefix("redis+cluster://").split(",")) == {
        f"127.0.0.1:{port}" for port in ports
    }


def test_keys_land_on_all_three_masters_where_master_of_says(shared_cluster):
    with shared_cluster.client() as client:
        for user in USERS:
            client.set(user_key(user), user)

    held: dict[int, set[str]] = {}
    for master in shared_cluster.masters():
        with redis.Redis(port=master.port, decode_responses=True) as direct:
            held[master.port] = set(direct.scan_iter("{u*}:offset"))
    assert all(held.values()), held
    for user in USERS:
        key = user_key(user)
        assert key in held[shared_cluster.master_of(key).port], (key, key_slot(key.encode()))


def test_a_killed_master_fails_over_to_its_replica_and_its_slots_take_writes_again(redis_cluster):
    client = redis_cluster.client()
    try:
        killed = redis_cluster.kill_master(1)
        promoted = redis_cluster.wait_for_failover(killed)

        assert promoted.port in killed.replicas
        masters = redis_cluster.masters()
        assert [master.port for master in masters].count(promoted.port) == 1
        assert masters[1] == promoted and promoted.slots == killed.slots
        # The client made before the failover finds the new master on its own (MOVED, reconnect).
        moved = [user for user in USERS if redis_cluster.master_of(user_key(user)) == promoted]
        assert moved
        for user in moved:
            client.set(user_key(user), "after failover")
    finally:
        client.close()
    with redis.Redis(port=promoted.port, decode_responses=True) as direct:
        assert all(direct.get(user_key(user)) == "after failover" for user in moved)


class FailedInside(Exception):
    pass


def fail_with_a_cluster(started: list[RedisCluster]) -> None:
    with running_redis_cluster() as cluster:
        started.append(cluster)
        raise FailedInside


def test_every_node_is_stopped_and_its_directory_removed_also_when_the_test_fails():
    started: list[RedisCluster] = []

    with pytest.raises(FailedInside):
        fail_with_a_cluster(started)

    [cluster] = started
    assert len(cluster.nodes) == 6
    assert not [node.process.pid for node in cluster.nodes if process_exists(node.process.pid)]
    assert not cluster.directory.exists()


def test_a_cluster_that_cannot_be_created_leaves_no_node_running(tmp_path: Path):
    # redis-cli refuses a cluster of fewer than three masters, after every node has started.
    cluster = RedisCluster(tmp_path, masters_count=2)

    with pytest.raises(ClusterFailed, match="create failed"):
        cluster.start()

    assert len(cluster.nodes) == 4
    assert cluster.pids() == []
    assert all(node.process is not None and node.process.returncode is not None for node in cluster.nodes)


def test_a_port_taken_before_its_node_binds_it_starts_the_nodes_again_on_new_ports(monkeypatch, tmp_path: Path):
    """Ports are free when picked; another process may bind one before its node does."""
    picks: list[list[int]] = []
    real_free_ports = redis_cluster_module.free_ports

    def free_ports_with_one_taken(count: int) -> list[int]:
        ports = real_free_ports(count)
        if not picks:
            ports[-1] = taken_port  # the last node's bus port: five nodes start before it fails
        picks.append(ports)
        return ports

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        taken_port = taken.getsockname()[1]
        monkeypatch.setattr(redis_cluster_module, "free_ports", free_ports_with_one_taken)
        cluster = RedisCluster(tmp_path)
        try:
            cluster.start()
            assert len(picks) == 2
            assert len(cluster.masters()) == 3
            assert taken_port not in {port for node in cluster.nodes for port in (node.port, node.bus_port)}
        finally:
            cluster.stop()
    assert cluster.pids() == []
