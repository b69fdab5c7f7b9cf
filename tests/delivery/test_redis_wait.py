"""TASKSYNC_REDIS_WAIT_REPLICAS: a publish is acknowledged only once that many Redis replicas
have it. Without a replica the events are refused (503), though stored; with one attached,
they are acknowledged, and the refused batch's retry is deduplicated."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import redis

from tasksync.client import SyncClient
from tests.service.test_delivery import next_update
from tests.support.redis_server import RedisServer
from tests.support.waiting import eventually


@pytest.fixture
def replica_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.cleanup()


def event(n: int) -> dict:
    return {"id": f"w-{n}", "event": "task.updated", "user_id": "ann", "task": {"n": n}}


async def test_publishes_are_acknowledged_only_once_a_replica_has_them(start_service, redis_server, replica_server):
    service = start_service(
        "--dev", "--broker", redis_server.url, "--redis-wait-replicas", "1", "--redis-wait-timeout", "0.2"
    )
    async with SyncClient(service.ws, user_id="ann") as ann, httpx.AsyncClient(timeout=30) as http:
        refused = await http.post(service.http + "/v1/events", json=[event(1), event(2)])
        assert refused.status_code == 503 and refused.headers["retry-after"]
        assert "0 of 2 events stored" in refused.json()["message"]
        # Stored and sent all the same: what WAIT refuses is the acknowledgement.
        assert [(await next_update(ann)).task["n"] for _ in range(2)] == [1, 2]

        with redis.Redis(port=replica_server.port) as replica:
            replica.replicaof("127.0.0.1", redis_server.port)

            def replica_in_sync() -> bool:
                info = replica.info("replication")
                return info["master_link_status"] == "up" and not info["master_sync_in_progress"]

            await eventually(replica_in_sync, timeout=30, what="the replica attached and in sync")
        retried = await http.post(service.http + "/v1/events", json=[event(1), event(2), event(3)])
        assert retried.status_code == 202, retried.text
        assert retried.json() == {"accepted": 1, "duplicates": 2}
        assert (await next_update(ann)).task["n"] == 3
