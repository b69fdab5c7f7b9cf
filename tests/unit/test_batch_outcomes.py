"""A batch that the broker takes only in part: what POST /v1/events and a Dapr bulk delivery
answer, per event. The broker stands for a Redis Cluster with one node down: the events of the
users on that node are refused, everyone else's are stored."""

from __future__ import annotations

from collections.abc import Sequence

from litestar.testing import TestClient

from tasksync.app import create_app
from tasksync.broker import BrokerUnavailable, Delivery, MemoryBroker
from tasksync.events import TaskEvent
from tasksync.service import Service
from tasksync.settings import Settings
from tests.support.events import bulk, cloudevent

DOWN = "bob"


class OneUserDown(MemoryBroker):
    async def publish_many(self, events: Sequence[TaskEvent]) -> list[Delivery | BrokerUnavailable | None]:
        outcomes: list[Delivery | BrokerUnavailable | None] = []
        for event in events:
            if event.user_id == DOWN:
                outcomes.append(BrokerUnavailable("the node of bob's slot is down"))
            else:
                outcomes.append(await self.publish(event))
        return outcomes


def event(user: str, n: int) -> dict:
    return {"id": f"{user}-{n}", "event": "task.updated", "user_id": user, "task": {"n": n}}


def client() -> TestClient:
    return TestClient(create_app(service=Service(Settings(dev=True), broker=OneUserDown())))


def test_a_batch_partly_refused_is_answered_503_naming_what_was_stored_and_its_retry_is_deduplicated():
    batch = [event("ann", 1), event("bob", 1), event("ann", 2), event("ann", 1)]
    with client() as http:
        answer = http.post("/v1/events", json=batch)
        assert answer.status_code == 503
        assert answer.headers["retry-after"]
        assert answer.json() == {
            "error": "broker_unavailable",
            "message": "broker unavailable: 3 of 4 events stored; retry the batch",
        }
        # The retry without bob: what was stored is deduplicated, not stored twice.
        answer = http.post("/v1/events", json=[e for e in batch if e["user_id"] != DOWN])
        assert answer.status_code == 202
        assert answer.json() == {"accepted": 0, "duplicates": 3}


def test_a_dapr_bulk_delivery_partly_refused_asks_to_retry_only_the_refused_entries():
    entries = [cloudevent(event("ann", 1)), cloudevent(event("bob", 1)), {"id": "no-data"}, cloudevent(event("ann", 2))]
    with client() as http:
        answer = http.post("/dapr/task-events", json=bulk(entries))
    assert answer.status_code == 200
    assert [s["status"] for s in answer.json()["statuses"]] == ["SUCCESS", "RETRY", "DROP", "SUCCESS"]
