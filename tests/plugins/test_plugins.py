"""Plugins over real sockets: a third-party plugin, failing plugins, the built-in notifiers."""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from pathlib import Path

import httpx
import msgspec
import pytest
from websockets.asyncio.client import connect

from tasksync.client import SyncClient
from tests.service.test_delivery import next_update, publish_http
from tests.support.events import payload
from tests.support.http_sink import HttpSink
from tests.support.metrics import value
from tests.support.waiting import eventually

pytestmark = pytest.mark.usefixtures("third_party_plugins")
ROOT = Path(__file__).parents[2]


async def test_third_party_plugin_installed_from_a_directory_shapes_the_toast(start_service):
    service = start_service("--dev", "--notifiers", "toast-fr,toast")
    async with SyncClient(service.ws, user_id="amelie") as client:
        await publish_http(service, payload("amelie", "task.completed", title="Acheter du pain"))
        update = await next_update(client)
        assert msgspec.to_builtins(update.notification) == {
            "title": "Tâche terminée", "body": "Acheter du pain", "kind": "info"
        }


async def test_a_plugin_that_returns_none_passes_to_the_next(start_service):
    service = start_service("--dev", "--notifiers", "toast-fr,toast", env={"TASKSYNC_LOCALE": "en"})
    async with SyncClient(service.ws, user_id="ann") as client:
        await publish_http(service, payload("ann", "task.deleted", title="Old"))
        update = await next_update(client)
        assert update.notification.title == "Task deleted"


def test_the_docs_example_is_the_plugin_the_tests_install():
    doc = (ROOT / "docs" / "plugins.md").read_text()
    example = (Path(__file__).parent / "fixtures" / "tasksync-toast-fr" / "tasksync_toast_fr.py").read_text()
    assert example.strip() in doc


async def test_a_raising_notifier_is_counted_and_events_still_flow(start_service):
    service = start_service("--dev", "--notifiers", "boom,toast", "--no-dapr-subscribe")
    async with SyncClient(service.ws, user_id="bo") as client:
        await publish_http(service, payload("bo", title="survives"))
        update = await next_update(client)
        # boom raised, so the next notifier answered.
        assert update.task["title"] == "survives" and update.notification.title == "Task created"
    errors = value(service, "tasksync_plugin_errors_total", plugin="boom", hook="tasksync_notification", kind="error")
    assert errors == 1
    assert "plugin 'boom' failed in tasksync_notification" in service.log()


async def test_a_hanging_notifier_is_cut_off_by_the_time_box(start_service):
    service = start_service("--dev", "--notifiers", "hang", "--plugin-timeout", "0.3")
    async with SyncClient(service.ws, user_id="cy") as client:
        started = time.monotonic()
        await publish_http(service, payload("cy", title="late but delivered"))
        update = await next_update(client)
        assert update.notification is None
        assert time.monotonic() - started < 3
    timeouts = value(
        service, "tasksync_plugin_errors_total", plugin="hang", hook="tasksync_notification", kind="timeout"
    )
    assert timeouts == 1


@pytest.mark.parametrize(("plugin", "kind"), [("boom", "error"), ("hang", "timeout")])
async def test_a_failing_auth_plugin_refuses_with_1011_without_hanging_the_handshake(start_service, plugin, kind):
    service = start_service("--auth", plugin, "--plugin-timeout", "0.5", env={"TASKSYNC_API_KEYS": "k"})
    started = time.monotonic()
    async with connect(service.ws) as ws:
        await ws.wait_closed()
        assert ws.close_code == 1011
    assert time.monotonic() - started < 5
    assert value(service, "tasksync_plugin_errors_total", plugin=plugin, hook="tasksync_authenticate", kind=kind) == 1
    # Everyone else is still served: ingest works.
    async with httpx.AsyncClient() as http:
        response = await http.post(
            service.http + "/v1/events", json=payload("x"), headers={"authorization": "Bearer k"}
        )
    assert response.status_code == 202


async def test_webhook_notifier_posts_signed_json_for_offline_users_with_retries(start_service):
    with HttpSink(statuses=iter([503, 500])) as sink:
        env = {
            "TASKSYNC_WEBHOOK_URL": sink.url,
            "TASKSYNC_WEBHOOK_SECRET": "hook-secret",
            "TASKSYNC_WEBHOOK_BACKOFF": "0.05",
        }
        service = start_service("--dev", "--notifiers", "toast,webhook", env=env)
        async with SyncClient(service.ws, user_id="online") as online:
            await publish_http(service, payload("online", title="seen live"))
            await next_update(online)
            await publish_http(service, {**payload("offline", "task.updated", title="while away"), "id": "evt-away"})
            await eventually(lambda: len(sink.received) == 3, what="two failures and one success")
        request = sink.received[-1]
        body = msgspec.json.decode(request.body)
        assert body["id"] == "evt-away" and body["user_id"] == "offline" and body["event"] == "task.updated"
        expected = hmac.new(b"hook-secret", request.headers["x-tasksync-timestamp"].encode() + b"." + request.body,
                            hashlib.sha256).hexdigest()
        assert request.headers["x-tasksync-signature"] == "sha256=" + expected
        # Only the offline user's event was posted; the online user's was delivered live.
        assert {msgspec.json.decode(r.body)["user_id"] for r in sink.received} == {"offline"}
        await eventually(
            lambda: value(service, "tasksync_offline_notifications_total", plugin="webhook", outcome="sent") == 1,
            what="the sent outcome counted",
        )


def test_webhook_refuses_to_start_without_url_and_secret(start_service):
    service = start_service("--dev", "--notifiers", "webhook", wait_ready=False)
    assert service.process.wait(20) != 0
    assert "TASKSYNC_WEBHOOK_URL" in service.log()


async def test_log_notifier_writes_one_structured_line_per_offline_event(start_service):
    service = start_service("--dev", "--notifiers", "log")
    await publish_http(service, {**payload("away", "task.created", id=7), "id": "evt-log"})
    line = await eventually(
        lambda: re.search(r'\{"msg":"event for offline user".*\}', service.log()), what="the offline log line"
    )
    record = msgspec.json.decode(line.group(0))
    assert (record["user_id"], record["event_id"], record["task_id"]) == ("away", "evt-log", 7)


def test_unknown_plugin_names_the_installed_ones(start_service):
    service = start_service("--dev", "--notifiers", "toast,nonexistent", wait_ready=False)
    assert service.process.wait(20) == 2
    assert "unknown plugin 'nonexistent'" in service.log() and "webhook" in service.log()
