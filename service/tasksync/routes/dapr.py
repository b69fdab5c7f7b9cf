"""Dapr pub/sub ingress: the programmatic subscription and the delivery route.

Dapr's contract (docs.dapr.io, "Publish and subscribe" and "Bulk messages"): the app answers
HTTP 200 with {"status": "SUCCESS" | "RETRY" | "DROP"}; for a bulk delivery, 200 with one
{"entryId", "status"} per entry. Any other HTTP status makes Dapr retry (404: drop with a warning),
so every permanent failure is answered DROP and never as an error status that would loop.
There is no Dapr sidecar binary in this project's tests: they speak this contract to the
service directly, byte for byte as the sidecar does.
"""

from __future__ import annotations

import collections
import logging
from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler

from ..broker import BrokerUnavailable
from ..ingest import (
    BulkEntryStatus,
    BulkEnvelope,
    BulkResponse,
    DaprResponse,
    DaprStatus,
    IngestError,
    body_type,
    bulk_envelope,
    decode_json,
    event_from_bulk_entry,
    event_from_cloudevent,
)
from ..service import Service
from ..settings import Settings
from .common import read_body, same_secret, service_of

log = logging.getLogger("tasksync.dapr")

BULK_EVENT_TYPE = "com.dapr.event.sent.bulk"
TOKEN_HEADER = "dapr-api-token"


def subscriptions(settings: Settings) -> list[dict[str, Any]]:
    """The programmatic subscription Dapr reads from GET /dapr/subscribe."""
    if not settings.dapr_subscribe:
        return []
    subscription: dict[str, Any] = {
        "pubsubname": settings.dapr_pubsub_name,
        "topic": settings.dapr_topic,
        "routes": {"default": settings.dapr_route},
    }
    if settings.dapr_dead_letter_topic:
        subscription["deadLetterTopic"] = settings.dapr_dead_letter_topic
    if settings.dapr_bulk_subscribe:
        subscription["bulkSubscribe"] = {
            "enabled": True,
            "maxMessagesCount": settings.dapr_bulk_max_messages,
            "maxAwaitDurationMs": settings.dapr_bulk_max_await_ms,
        }
    return [subscription]


def _unauthorized(request: Request, service: Service) -> Response | None:
    expected = service.settings.dapr_api_token
    if expected and not same_secret(request.headers.get(TOKEN_HEADER), expected):
        service.metrics.ingest_errors.labels("dapr", "unauthorized").inc()
        return Response({"error": "unauthorized", "message": f"missing or wrong {TOKEN_HEADER} header"}, status_code=401)
    return None


@get("/dapr/subscribe")
async def dapr_subscribe(request: Request) -> Response:
    service = service_of(request)
    return _unauthorized(request, service) or Response(subscriptions(service.settings))


async def _ingest_one(service: Service, make_event) -> DaprStatus:
    """Validate and publish one event; the Dapr status that answers it."""
    try:
        event = make_event()
    except IngestError as error:
        service.metrics.ingest_errors.labels("dapr", error.reason).inc()
        log.warning("dropping Dapr event: %s", error.message)
        return "DROP"
    try:
        await service.ingest(event)
    except BrokerUnavailable as error:
        service.metrics.ingest_errors.labels("dapr", "broker_unavailable").inc()
        log.warning("asking Dapr to retry event %s: %s", event.id, error)
        return "RETRY"
    return "SUCCESS"


async def dapr_events(request: Request) -> Response:
    service = service_of(request)
    if (refused := _unauthorized(request, service)) is not None:
        return refused
    metrics = service.metrics
    raw = await read_body(request)
    if raw is None:
        metrics.ingest_errors.labels("dapr", "too_large").inc()
        metrics.dapr_responses.labels("DROP").inc()
        return _answer(DaprResponse("DROP"))
    try:
        bulk = bulk_envelope(raw) if body_type(raw) == BULK_EVENT_TYPE else None
        body = decode_json(raw) if bulk is None else None
    except IngestError as error:
        # Without entry ids there is nothing to answer per entry: a plain DROP is all Dapr can take.
        metrics.ingest_errors.labels("dapr", error.reason).inc()
        metrics.dapr_responses.labels("DROP").inc()
        return _answer(DaprResponse("DROP"))
    if bulk is not None:
        return await _ingest_bulk(service, bulk)
    status = await _ingest_one(service, lambda: event_from_cloudevent(body))
    metrics.dapr_responses.labels(status).inc()
    return _answer(DaprResponse(status))


async def _ingest_bulk(service: Service, envelope: BulkEnvelope) -> Response:
    statuses = []
    for entry in envelope.entries:
        status = await _ingest_one(service, lambda entry=entry: event_from_bulk_entry(entry))
        statuses.append(BulkEntryStatus(entry_id=entry.entry_id, status=status))
    # One `.labels()` per status, not per entry: it takes a lock and validates every call.
    for status, count in collections.Counter(s.status for s in statuses).items():
        service.metrics.dapr_responses.labels(status).inc(count)
    return _answer(BulkResponse(statuses=statuses))


def _answer(payload: DaprResponse | BulkResponse) -> Response:
    return Response(msgspec.json.encode(payload), media_type="application/json", status_code=200)


def dapr_route_handlers(settings: Settings) -> list[HTTPRouteHandler]:
    # The delivery path is a setting, so its handler is registered at the configured path.
    return [dapr_subscribe, post(settings.dapr_route, name="dapr-events")(dapr_events)]
