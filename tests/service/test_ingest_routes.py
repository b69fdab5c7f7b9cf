"""The ingest surfaces over real HTTP: Dapr's contract, HTTP publish, API keys and tokens."""

from __future__ import annotations

import httpx
import msgspec
import pytest

from tasksync.client import SyncClient
from tests.service.test_delivery import next_update
from tests.support.events import bulk, cloudevent, payload

CE = {"content-type": "application/cloudevents+json"}


def post(service, path: str, body, headers: dict[str, str] | None = None) -> httpx.Response:
    content = body if isinstance(body, bytes) else msgspec.json.encode(body)
    return httpx.post(service.http + path, content=content, headers={**CE, **(headers or {})})


def test_programmatic_subscription_names_pubsub_topic_route_dead_letter_and_bulk(start_service):
    service = start_service(
        "--dev",
        "--dapr-pubsub-name", "tasks-pubsub",
        "--dapr-topic", "tasks",
        "--dapr-route", "/ingest/dapr",
        "--dapr-dead-letter-topic", "tasks-dead",
        "--dapr-bulk-subscribe",
    )
    assert httpx.get(service.http + "/dapr/subscribe").json() == [
        {
            "pubsubname": "tasks-pubsub",
            "topic": "tasks",
            "routes": {"default": "/ingest/dapr"},
            "deadLetterTopic": "tasks-dead",
            "bulkSubscribe": {"enabled": True, "maxMessagesCount": 100, "maxAwaitDurationMs": 40},
        }
    ]
    # The route follows the setting.
    assert post(service, "/ingest/dapr", cloudevent(payload("u"))).json() == {"status": "SUCCESS"}


def test_programmatic_subscription_can_be_switched_off(start_service):
    service = start_service("--dev", "--no-dapr-subscribe")
    assert httpx.get(service.http + "/dapr/subscribe").json() == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "invalid_json"),
        ({k: v for k, v in cloudevent({}).items() if k != "data"}, "missing_data"),
        (cloudevent({"event": "task.exploded", "user_id": "u", "task": {}}), "unknown_event"),
        (cloudevent({"event": "task.created", "task": {}}), "missing_user_id"),
        (cloudevent({"event": "task.created", "user_id": "u", "task": [1, 2]}), "invalid_task"),
        (
            cloudevent({"event": "task.created", "user_id": "u", "task": {}, "occurred_at": "yesterday"}),
            "invalid_occurred_at",
        ),
    ],
)
def test_permanently_invalid_dapr_events_are_dropped_not_retried(dev_service, body, reason):
    response = post(dev_service, "/dapr/task-events", body)
    assert response.status_code == 200
    assert response.json() == {"status": "DROP"}
    metrics = httpx.get(dev_service.http + "/metrics").text
    assert f'tasksync_ingest_errors_total{{reason="{reason}",source="dapr"}} 1.0' in metrics


def test_oversized_dapr_body_is_dropped(start_service):
    service = start_service("--dev", "--max-body-bytes", "2048")
    big = cloudevent(payload("u", title="x" * 4096))
    assert post(service, "/dapr/task-events", big).json() == {"status": "DROP"}


async def test_bulk_delivery_answers_one_status_per_entry_and_delivers_the_valid_ones(dev_service):
    async with SyncClient(dev_service.ws, user_id="gina") as gina:
        good1 = cloudevent(payload("gina", title="one"))
        good2 = cloudevent(payload("gina", title="two"))
        bad = cloudevent({"event": "task.nope", "user_id": "gina", "task": {}})
        response = post(dev_service, "/dapr/task-events", bulk([good1, bad, good2]))
        assert response.status_code == 200
        assert response.json() == {
            "statuses": [
                {"entryId": "entry-0", "status": "SUCCESS"},
                {"entryId": "entry-1", "status": "DROP"},
                {"entryId": "entry-2", "status": "SUCCESS"},
            ]
        }
        assert [(await next_update(gina)).task["title"] for _ in range(2)] == ["one", "two"]


def test_bulk_envelope_without_entries_is_dropped(dev_service):
    assert post(dev_service, "/dapr/task-events", {"type": "com.dapr.event.sent.bulk"}).json() == {"status": "DROP"}


def test_dapr_api_token_is_required_when_configured(start_service):
    service = start_service("--dev", env={"TASKSYNC_DAPR_API_TOKEN": "s3cret"})
    event = cloudevent(payload("u"))
    assert post(service, "/dapr/task-events", event).status_code == 401
    assert post(service, "/dapr/task-events", event, {"dapr-api-token": "wrong"}).status_code == 401
    assert httpx.get(service.http + "/dapr/subscribe").status_code == 401
    ok = post(service, "/dapr/task-events", event, {"dapr-api-token": "s3cret"})
    assert ok.status_code == 200 and ok.json() == {"status": "SUCCESS"}
    assert httpx.get(service.http + "/dapr/subscribe", headers={"dapr-api-token": "s3cret"}).status_code == 200


def test_http_publish_requires_a_configured_api_key(start_service):
    service = start_service("--dev", env={"TASKSYNC_API_KEYS": "key-one,key-two"})
    url = service.http + "/v1/events"
    assert httpx.post(url, json=payload("u")).status_code == 401
    refused = httpx.post(url, json=payload("u"), headers={"authorization": "Bearer nope"})
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    for key in ("key-one", "key-two"):
        assert httpx.post(url, json=payload("u"), headers={"authorization": f"Bearer {key}"}).status_code == 202


def test_service_refuses_to_run_development_auth_outside_development_mode(start_service):
    service = start_service("--auth", "dev", wait_ready=False)
    assert service.process.wait(20) != 0
    assert "refused outside development mode" in service.log()
    unconfigured = start_service(wait_ready=False)
    assert unconfigured.process.wait(20) == 2
    assert "no auth plugin configured" in unconfigured.log()


@pytest.mark.parametrize(
    ("body", "status", "reason", "says"),
    [
        (b"[{]", 400, "invalid_json", "not valid JSON"),
        (b"[]", 422, "empty_batch", "empty"),
        (b'"just a string"', 422, "invalid_payload", "must be a JSON object"),
        (
            msgspec.json.encode({"event": "task.renamed", "user_id": "u", "task": {}}),
            422, "unknown_event", "task.renamed",
        ),
        (msgspec.json.encode({"event": "task.created", "task": {}}), 422, "missing_user_id", "user_id"),
        (
            msgspec.json.encode({"event": "task.created", "user_id": "u", "task": "x"}),
            422, "invalid_task", "got string",
        ),
        (msgspec.json.encode([payload("u"), {"event": "task.created", "user_id": "u"}]), 422, "invalid_task", "item 1"),
    ],
)
def test_http_publish_bad_input_gets_a_clear_error(dev_service, body, status, reason, says):
    response = httpx.post(dev_service.http + "/v1/events", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status
    assert response.json()["error"] == reason
    assert says in response.json()["message"]


def test_http_publish_oversized_body_is_413(start_service):
    service = start_service("--dev", "--max-body-bytes", "2048")
    response = httpx.post(service.http + "/v1/events", json=payload("u", title="x" * 4096))
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"


def test_a_rejected_batch_publishes_nothing(dev_service):
    batch = [payload("hal", title="fine"), {"event": "task.created", "user_id": "hal", "task": None}]
    assert httpx.post(dev_service.http + "/v1/events", json=batch).status_code == 422
    metrics = httpx.get(dev_service.http + "/metrics").text
    assert "tasksync_events_received_total{" not in metrics


OUT_OF_RANGE = "0001-01-01T00:00:00+01:00"  # ISO 8601, but before year 1 once in UTC


def test_an_out_of_range_time_is_refused_as_bad_input_on_every_ingest_path(dev_service):
    event = {**payload("ivy"), "occurred_at": OUT_OF_RANGE}
    http = httpx.post(dev_service.http + "/v1/events", json=event)
    assert http.status_code == 422
    assert http.json()["error"] == "invalid_occurred_at"
    dapr = post(dev_service, "/dapr/task-events", cloudevent(event))
    assert dapr.status_code == 200 and dapr.json() == {"status": "DROP"}


async def test_an_out_of_range_time_in_a_bulk_delivery_drops_that_entry_alone(dev_service):
    async with SyncClient(dev_service.ws, user_id="ivy") as ivy:
        entries = [
            cloudevent(payload("ivy", title="before")),
            cloudevent({**payload("ivy", title="bad"), "occurred_at": OUT_OF_RANGE}),
            cloudevent(payload("ivy", title="after")),
        ]
        response = post(dev_service, "/dapr/task-events", bulk(entries))
        assert response.status_code == 200
        assert [s["status"] for s in response.json()["statuses"]] == ["SUCCESS", "DROP", "SUCCESS"]
        assert [(await next_update(ivy)).task["title"] for _ in range(2)] == ["before", "after"]
