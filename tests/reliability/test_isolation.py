"""Isolation, property-based, over real sockets: random users, connections, reconnects and
events through every ingest path and both brokers. No frame ever reaches a socket of another
user, and each user's sockets receive exactly their events, once each, in order."""

from __future__ import annotations

import asyncio
import itertools
import os
import uuid

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasksync.client import SyncClient
from tasksync.protocol import ResyncRequired, TaskUpdate
from tests.support.events import bulk, cloudevent
from tests.support.redis_server import RedisServer
from tests.support.servers import ServiceProcess

EXAMPLES = int(os.environ.get("TASKSYNC_ISOLATION_EXAMPLES", "1000"))
_counts = {"examples": 0, "events": 0, "frames": 0, "cross_user": 0, "lost": 0, "reconnects": 0}


@pytest.fixture(scope="module", params=["memory", "redis"])
def isolation_service(request):
    redis_server = RedisServer().start() if request.param == "redis" else None
    args = ["--dev", "--heartbeat-interval", "60"]
    if redis_server is not None:
        args += ["--broker", redis_server.url]
    service = ServiceProcess(args=args).start()
    service.broker_name = request.param
    yield service
    service.stop()
    if redis_server is not None:
        redis_server.cleanup()


@pytest.fixture(scope="module", autouse=True)
def record_isolation(report):
    yield
    report.record(
        "isolation (property-based, both brokers, dapr/bulk/http ingest)",
        **{
            "load held": f"{_counts['examples']} random examples, {_counts['reconnects']} reconnects",
            "inputs tried": f"{_counts['events']} events",
            "events lost": _counts["lost"],
            "cross-user frames": _counts["cross_user"],
            "notes": f"{_counts['frames']} task_update frames checked",
        },
    )


operation = st.one_of(
    st.tuples(st.just("publish"), st.integers(0, 2), st.sampled_from(["http", "dapr", "bulk"]), st.integers(1, 3)),
    st.tuples(st.just("reconnect"), st.integers(0, 5), st.just(""), st.just(0)),
)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    user_count=st.integers(1, 3),
    tabs=st.lists(st.integers(1, 2), min_size=3, max_size=3),
    operations=st.lists(operation, min_size=1, max_size=10),
)
def test_no_frame_reaches_another_user_and_each_user_gets_exactly_its_events(
    isolation_service, user_count, tabs, operations
):
    asyncio.run(_example(isolation_service, user_count, tabs, operations))


async def _example(service: ServiceProcess, user_count: int, tabs: list[int], operations) -> None:
    run = uuid.uuid4().hex[:8]
    users = [f"iso-{run}-{n}" for n in range(user_count)]
    clients: list[tuple[str, SyncClient]] = []
    for user, count in zip(users, tabs, strict=False):
        for _ in range(count):
            client = SyncClient(service.ws, user_id=user)
            await client.connect()
            clients.append((user, client))
    expected: dict[str, list[str]] = {user: [] for user in users}
    serial = itertools.count()
    async with httpx.AsyncClient(base_url=service.http) as http:
        for kind, index, path, count in operations:
            if kind == "reconnect":
                # Frames not yet read are lost with the socket; resume must bring them back.
                _, client = clients[index % len(clients)]
                await client.close()
                await client.connect()
                _counts["reconnects"] += 1
                continue
            user = users[index % len(users)]
            events = []
            for _ in range(count):
                event_id = f"{run}-{next(serial)}"
                events.append({"event": "task.updated", "user_id": user, "task": {"owner": user, "event": event_id}})
                expected[user].append(event_id)
            if path == "http":
                response = await http.post("/v1/events", json=events)
                assert response.status_code == 202
            elif path == "dapr":
                for event in events:
                    delivery = cloudevent(event, event_id=event["task"]["event"])
                    response = await http.post("/dapr/task-events", json=delivery)
                    assert response.json() == {"status": "SUCCESS"}
            else:
                entries = [cloudevent(event, event_id=event["task"]["event"]) for event in events]
                response = await http.post("/dapr/task-events", json=bulk(entries))
                assert {s["status"] for s in response.json()["statuses"]} == {"SUCCESS"}
            _counts["events"] += count
    for user, client in clients:
        got: list[str] = []
        try:
            async with asyncio.timeout(10):
                while len(got) < len(expected[user]):
                    frame = await client.receive()
                    assert not isinstance(frame, ResyncRequired), "history is large enough; no resync expected"
                    if isinstance(frame, TaskUpdate):
                        _counts["frames"] += 1
                        if frame.task["owner"] != user:
                            _counts["cross_user"] += 1
                        got.append(frame.task["event"])
        except TimeoutError:
            _counts["lost"] += len(expected[user]) - len(got)
            raise
        finally:
            await client.close()
        # Every socket connected before the first publish, so it must see every event of its user.
        assert got == expected[user], f"{user}: got {got}, expected {expected[user]}"
    assert _counts["cross_user"] == 0
    _counts["examples"] += 1
