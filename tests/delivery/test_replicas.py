"""Two replicas (two processes) on one real Redis."""

from __future__ import annotations

import httpx

from tasksync.client import SyncClient
from tests.service.test_delivery import next_update, publish_http
from tests.support.events import cloudevent, payload
from tests.support.metrics import value


def replicas(start_service, redis_server, count: int = 2):
    return [start_service("--dev", "--broker", redis_server.url) for _ in range(count)]


async def test_a_user_with_a_tab_on_each_replica_gets_every_event_published_to_either(start_service, redis_server):
    a, b = replicas(start_service, redis_server)
    async with (
        SyncClient(a.ws, user_id="vic") as on_a,
        SyncClient(b.ws, user_id="vic") as on_b,
        SyncClient(a.ws, user_id="wes") as bystander,
    ):
        assert on_a.connected.epoch == on_b.connected.epoch
        await publish_http(a, payload("vic", title="via a"))
        await publish_http(b, payload("vic", title="via b"))
        for tab in (on_a, on_b):
            got = [await next_update(tab) for _ in range(2)]
            assert [(u.seq, u.task["title"]) for u in got] == [(1, "via a"), (2, "via b")]
        # wes, on neither user's path, gets nothing: his own marker is the first thing he sees.
        await publish_http(b, payload("wes", title="marker"))
        assert (await next_update(bystander)).task["title"] == "marker"


async def test_duplicate_event_ids_across_replicas_are_delivered_once(start_service, redis_server):
    a, b = replicas(start_service, redis_server)
    async with SyncClient(a.ws, user_id="xia") as xia:
        event = cloudevent(payload("xia", title="once"), event_id="dup-1")
        async with httpx.AsyncClient() as http:
            for replica in (a, b, a):
                response = await http.post(replica.http + "/dapr/task-events", json=event)
                assert response.json() == {"status": "SUCCESS"}
        await publish_http(b, payload("xia", title="marker"))
        assert [(await next_update(xia)).task["title"] for _ in range(2)] == ["once", "marker"]
    duplicates = [value(replica, "tasksync_events_duplicate_total") for replica in (a, b)]
    assert sorted(duplicates) == [1.0, 1.0]
