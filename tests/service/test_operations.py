"""Health, readiness and metrics over real HTTP."""

from __future__ import annotations

import httpx
from websockets.asyncio.client import connect

from tasksync.client import SyncClient
from tests.service.test_delivery import next_update, publish_http
from tests.support.events import payload
from tests.support.metrics import samples
from tests.support.waiting import eventually


def test_health_and_readiness(dev_service):
    live = httpx.get(dev_service.http + "/health")
    assert live.status_code == 200 and live.json() == {"status": "ok"}
    ready = httpx.get(dev_service.http + "/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {
        "ready": True,
        "broker": {"name": "memory", "reachable": True},
        "draining": False,
        "full": False,
        "connections": 0,
        "limits_generation": 0,
    }


async def test_metrics_count_connections_reconnects_events_deliveries_and_latency(dev_service):
    async with SyncClient(dev_service.ws, user_id="rae") as rae:
        # A reconnect after three failed attempts, as the web client reports it.
        async with connect(f"{dev_service.ws}?user_id=rae&reconnect=1&attempts=3"):
            await eventually(lambda: samples(dev_service)[("tasksync_connections_active", ())] == 2, what="2 active")
            await publish_http(dev_service, payload("rae", "task.completed"))
            await next_update(rae)
        await publish_http(dev_service, [payload("nobody-online"), {"event": "bad"}])
        m = await eventually(
            lambda: (s := samples(dev_service))[("tasksync_connections_active", ())] == 1 and s, what="1 active"
        )
    assert m[("tasksync_connections_opened_total", (("kind", "new"),))] == 1
    assert m[("tasksync_connections_opened_total", (("kind", "reconnect"),))] == 1
    assert m[("tasksync_reconnects_total", ())] == 1
    assert m[("tasksync_reconnect_failed_attempts_total", ())] == 3
    assert m[("tasksync_connections_closed_total", (("reason", "client"),))] == 1
    assert m[("tasksync_events_received_total", (("event", "task.completed"), ("source", "http")))] == 1
    assert m[("tasksync_ingest_errors_total", (("reason", "unknown_event"), ("source", "http")))] == 1
    # Two sockets of rae were live: two deliveries, and one latency observation for the event.
    assert m[("tasksync_events_delivered_total", ())] == 2
    assert m[("tasksync_delivery_latency_seconds_count", ())] == 1
    assert m[("tasksync_delivery_latency_seconds_sum", ())] < 1.0
