"""The Dapr routes of a production service (JWT auth, API keys): closed to everyone until the
sidecar's token is configured, and a bulk body of bad entries costs one log line, not one per
entry."""

from __future__ import annotations

import httpx
import msgspec

from tasksync.client import SyncClient
from tests.service.test_delivery import next_update
from tests.support.events import bulk, cloudevent, payload
from tests.support.jwt_tokens import AUDIENCE, ISSUER, SECRET, claims, hs256
from tests.support.metrics import value

API_KEY = "backend-key"
PRODUCTION = {
    "TASKSYNC_JWT_SECRET": SECRET,
    "TASKSYNC_JWT_AUDIENCE": AUDIENCE,
    "TASKSYNC_JWT_ISSUER": ISSUER,
    "TASKSYNC_API_KEYS": API_KEY,
}
SIDECAR_TOKEN = "sidecar-app-token"
BAD_ENTRIES = 25_000


def post_dapr(service, body, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(
        service.http + "/dapr/task-events",
        content=msgspec.json.encode(body),
        headers={"content-type": "application/cloudevents+json", **(headers or {})},
        timeout=60,
    )


def publish_marker(service, user_id: str) -> httpx.Response:
    return httpx.post(
        service.http + "/v1/events",
        json=payload(user_id, title="marker"),
        headers={"authorization": f"Bearer {API_KEY}"},
    )


async def test_without_a_dapr_token_forged_deliveries_are_refused_and_reach_no_socket(start_service, report):
    service = start_service("--auth", "jwt", env=PRODUCTION)
    async with SyncClient(service.ws, token=hs256(claims("alice"))) as alice:
        single = post_dapr(service, cloudevent(payload("alice", title="Your session expired: call +1 555 0100")))
        in_bulk = post_dapr(service, bulk([cloudevent(payload("alice", title="forged in bulk")) for _ in range(3)]))
        async with httpx.AsyncClient() as http:
            subscription = await http.get(service.http + "/dapr/subscribe")
        for response in (single, in_bulk, subscription):
            # Not 404 (Dapr would drop the event) and not 2xx: Dapr keeps the event and retries.
            assert response.status_code == 403
            assert "TASKSYNC_DAPR_API_TOKEN" in response.json()["message"]
        assert publish_marker(service, "alice").status_code == 202
        # The marker is alice's first event: nothing forged was delivered before it.
        first = await next_update(alice)
        assert (first.task["title"], first.seq) == ("marker", 1)
    assert value(service, "tasksync_ingest_errors_total", source="dapr", reason="token_not_configured") == 3
    assert "TASKSYNC_DAPR_API_TOKEN" in next(line for line in service.log().splitlines() if "WARNING" in line)
    report.record(
        "forged Dapr deliveries without a configured Dapr token (JWT auth, API keys)",
        **{
            "inputs tried": "one CloudEvent, one bulk of 3, GET /dapr/subscribe",
            "events lost": 0,
            "cross-user frames": 0,
            "notes": (
                "each answered 403 naming TASKSYNC_DAPR_API_TOKEN; the user's first frame is the /v1/events marker"
            ),
        },
    )


async def test_with_the_sidecar_token_deliveries_are_served_and_a_bad_bulk_body_is_one_log_line(start_service, report):
    service = start_service("--auth", "jwt", env={**PRODUCTION, "TASKSYNC_DAPR_API_TOKEN": SIDECAR_TOKEN})
    sidecar = {"dapr-api-token": SIDECAR_TOKEN}
    async with SyncClient(service.ws, token=hs256(claims("bob"))) as bob:
        assert post_dapr(service, cloudevent(payload("bob", title="forged"))).status_code == 401
        delivered = post_dapr(service, cloudevent(payload("bob", title="from the sidecar")), sidecar)
        assert delivered.json() == {"status": "SUCCESS"}
        first = await next_update(bob)
        assert (first.task["title"], first.seq) == ("from the sidecar", 1)

    # Each entry names no event: 25,000 entries in about 800 KB, under the 1 MiB body limit.
    body = {
        "type": "com.dapr.event.sent.bulk",
        "entries": [{"entryId": f"e{i}", "event": {}} for i in range(BAD_ENTRIES)],
    }
    lines_before = len(service.log().splitlines())
    response = post_dapr(service, body, sidecar)
    assert response.status_code == 200
    assert {entry["status"] for entry in response.json()["statuses"]} == {"DROP"}
    written = service.log().splitlines()[lines_before:]
    dapr_lines = [line for line in written if "tasksync.dapr" in line]
    assert len(dapr_lines) == 1 and str(BAD_ENTRIES) in dapr_lines[0]
    assert len(written) <= 2  # that line and the access log's
    assert value(service, "tasksync_dapr_responses_total", status="DROP") == BAD_ENTRIES
    report.record(
        "Dapr bulk body of 25,000 bad entries",
        **{
            "inputs tried": f"{len(msgspec.json.encode(body)) // 1024} KiB bulk body, {BAD_ENTRIES} entries",
            "events lost": 0,
            "cross-user frames": 0,
            "notes": f"{len(written)} log lines written for the request; every entry answered DROP and counted",
        },
    )
