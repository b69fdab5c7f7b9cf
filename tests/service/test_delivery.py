"""Delivery over real sockets: uvicorn in a subprocess, clients on real WebSockets."""

from __future__ import annotations

import asyncio

import httpx

from tasksync.client import SyncClient
from tasksync.protocol import Connected, Ping, TaskUpdate
from tasksync.publisher import Publisher
from tests.support.events import cloudevent, payload
from tests.support.servers import ServiceProcess

DELIVERY_TIMEOUT = 5.0


async def next_update(client: SyncClient) -> TaskUpdate:
    """The next task_update, skipping pings, within the delivery timeout."""
    async with asyncio.timeout(DELIVERY_TIMEOUT):
        while True:
            frame = await client.receive()
            if isinstance(frame, TaskUpdate):
                return frame


async def publish_http(service: ServiceProcess, body) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(service.http + "/v1/events", json=body)


async def publish_dapr(service: ServiceProcess, event) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(
            service.http + "/dapr/task-events",
            content=httpx.Request("POST", "/", json=event).content,
            headers={"content-type": "application/cloudevents+json"},
        )


async def test_two_tabs_of_one_user_receive_dapr_and_http_events_and_another_user_nothing(dev_service):
    async with (
        SyncClient(dev_service.ws, user_id="alice") as tab1,
        SyncClient(dev_service.ws, user_id="alice") as tab2,
        SyncClient(dev_service.ws, user_id="bob") as bob,
    ):
        via_dapr = cloudevent(payload("alice", "task.created", title="from dapr"))
        response = await publish_dapr(dev_service, via_dapr)
        assert response.status_code == 200 and response.json() == {"status": "SUCCESS"}
        for tab in (tab1, tab2):
            update = await next_update(tab)
            assert (update.event, update.task["title"], update.id) == ("task.created", "from dapr", via_dapr["id"])

        response = await publish_http(dev_service, payload("alice", "task.updated", title="from http"))
        assert response.status_code == 202 and response.json() == {"accepted": 1, "duplicates": 0}
        for tab in (tab1, tab2):
            update = await next_update(tab)
            assert (update.event, update.task["title"]) == ("task.updated", "from http")

        # Bob must have received nothing. Checked, not assumed: a marker event for bob is
        # published after alice's; events are delivered in ingest order, so when the marker
        # arrives anything misrouted to bob would already have arrived before it.
        await publish_http(dev_service, payload("bob", "task.created", title="bob's marker"))
        first_for_bob = await next_update(bob)
        assert first_for_bob.task["title"] == "bob's marker"
        assert first_for_bob.seq == 1


async def test_first_frame_is_connected_and_pings_follow_at_the_heartbeat_interval(dev_service):
    client = SyncClient(dev_service.ws, user_id="carol")
    connected = await client.connect()
    try:
        assert isinstance(connected, Connected)
        assert connected.user_id == "carol"
        assert connected.seq == 0 and connected.epoch.startswith("m-")
        assert connected.heartbeat_interval == 0.5
        assert connected.resumed is False
        loop = asyncio.get_running_loop()
        started = loop.time()
        pings = []
        async with asyncio.timeout(5):
            while len(pings) < 3:
                frame = await client.receive()
                if isinstance(frame, Ping):
                    pings.append(loop.time())
        # Three pings at a 0.5 s interval cannot take less than ~1 s or much more than 1.5 s.
        assert 0.9 <= pings[-1] - started <= 3.0
    finally:
        await client.close()


async def test_seq_grows_by_one_per_user_event_independently_per_user(dev_service):
    async with SyncClient(dev_service.ws, user_id="dave") as dave, SyncClient(dev_service.ws, user_id="erin") as erin:
        for _ in range(3):
            await publish_http(dev_service, payload("dave"))
        await publish_http(dev_service, [payload("erin"), payload("dave")])
        assert [(await next_update(dave)).seq for _ in range(4)] == [1, 2, 3, 4]
        erin_update = await next_update(erin)
        assert erin_update.seq == 1
        assert erin_update.epoch == dave.epoch


async def test_same_event_id_twice_is_delivered_once(dev_service):
    async with SyncClient(dev_service.ws, user_id="fay") as fay:
        event = cloudevent(payload("fay", title="once"))
        for _ in range(2):
            assert (await publish_dapr(dev_service, event)).json() == {"status": "SUCCESS"}
        await publish_http(dev_service, payload("fay", title="marker"))
        assert (await next_update(fay)).task["title"] == "once"
        assert (await next_update(fay)).task["title"] == "marker"


async def test_the_publisher_passes_an_operation_id_through_to_the_socket(dev_service):
    async with Publisher.for_http(dev_service.http) as publisher, SyncClient(dev_service.ws, user_id="actor") as tab:
        await publisher.publish("task.created", user_id="actor", task={"id": 1}, op_id="tab-7.1")
        await publisher.publish("task.updated", user_id="actor", task={"id": 1})
        first, second = await next_update(tab), await next_update(tab)
    assert (first.op_id, second.op_id) == ("tab-7.1", None)
