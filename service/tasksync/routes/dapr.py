"""Dapr pub/sub ingress: the programmatic subscription and the delivery route.

Dapr's contract (docs.dapr.io, "Publish and subscribe" and "Bulk messages"): the app answers
HTTP 200 with {"status": "SUCCESS" | "RETRY" | "DROP"}; for a bulk delivery, 200 with one
{"entryId", "status"} per entry. Any other HTTP status makes Dapr retry (404: drop with a warning),
so every permanent failure is answered DROP and never as an error status that would loop.
There is no Dapr sidecar binary in this project's tests: they speak this contract to the
service directly, byte for byte as the sidecar does.

Who may call: only the sidecar, which sends its APP_API_TOKEN in the dapr-api-token header on
every call to the app. Outside development mode the routes are closed (403) until
TASKSYNC_DAPR_API_TOKEN is set to that token: open, they would let anyone who reaches the port
publish to any user. The service still starts, so sockets and POST /v1/events keep working while
the token is missing; a startup WARNING and tasksync_ingest_errors_total{reason=
"token_not_configured"} say what to set, and Dapr keeps the refused events (see `_refusal`).

A delivery's rejected entries are logged as one line per request (counts by status and reason,
the first message), so a bulk body of bad entries cannot flood the log; the metrics count each.
"""

from __future__ import annotations

import collections
import logging
from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler

from ..broker import BrokerUnavailable
from ..events import TaskEvent
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
from ..service import DAPR_TOKEN_NOT_SET, Service
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


def _refusal(request: Request, service: Service) -> Response | None:
    """The answer to a request that may not use the Dapr routes, or None."""
    settings = service.settings
    expected = settings.dapr_api_token
    if not expected:
        if settings.dev:
            return None
        # 403 rather than 404 or 2xx: Dapr drops an event answered 404 and retries one answered
        # any other error status (per its resiliency policy, then to the dead-letter topic), so
        # what is published while the token is missing is kept, not lost.
        service.metrics.ingest_errors.labels("dapr", "token_not_configured").inc()
        return Response({"error": "dapr_token_not_configured", "message": DAPR_TOKEN_NOT_SET}, status_code=403)
    if not same_secret(request.headers.get(TOKEN_HEADER), expected):
        service.metrics.ingest_errors.labels("dapr", "unauthorized").inc()
        return Response(
            {"error": "unauthorized", "message": f"missing or wrong {TOKEN_HEADER} header"}, status_code=401
        )
    return None


@get("/dapr/subscribe")
async def dapr_subscribe(request: Request) -> Response:
    service = service_of(request)
    return _refusal(request, service) or Response(subscriptions(service.settings))


class _Rejections:
    """The events of one delivery that were not accepted, counted by (status, reason), with the
    first one's message: what one log line per request says."""

    __slots__ = ("counts", "first")

    def __init__(self) -> None:
        self.counts: collections.Counter[tuple[DaprStatus, str]] = collections.Counter()
        self.first = ""

    def add(self, status: DaprStatus, reason: str, message: str) -> None:
        if not self.counts:
            self.first = message
        self.counts[status, reason] += 1

    def report(self, service: Service, events: int) -> None:
        if not self.counts:
            return
        for (_, reason), count in self.counts.items():
            service.metrics.ingest_errors.labels("dapr", reason).inc(count)
        summary = ", ".join(f"{status} {reason}: {count}" for (status, reason), count in self.counts.most_common())
        log.warning(
            "Dapr delivery: %d of %d events not accepted (%s); first: %s",
            self.counts.total(),
            events,
            summary,
            self.first,
        )


def _validated(make_event, rejections: _Rejections) -> TaskEvent | None:
    """The event an entry holds, or None once its rejection is recorded (DROP)."""
    try:
        return make_event()
    except IngestError as error:
        rejections.add("DROP", error.reason, error.message)
        return None


async def _publish(service: Service, events: list[TaskEvent], rejections: _Rejections) -> list[DaprStatus]:
    """Publish valid events as one batch; the Dapr status that answers each."""
    statuses: list[DaprStatus] = []
    for event, outcome in zip(events, await service.ingest_many(events), strict=True):
        if isinstance(outcome, BrokerUnavailable):
            rejections.add("RETRY", "broker_unavailable", f"event {event.id}: {outcome}")
            statuses.append("RETRY")
        else:
            statuses.append("SUCCESS")
    return statuses


async def dapr_events(request: Request) -> Response:
    service = service_of(request)
    if (refused := _refusal(request, service)) is not None:
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
    rejections = _Rejections()
    event = _validated(lambda: event_from_cloudevent(body), rejections)
    status: DaprStatus = "DROP" if event is None else (await _publish(service, [event], rejections))[0]
    rejections.report(service, 1)
    metrics.dapr_responses.labels(status).inc()
    return _answer(DaprResponse(status))


async def _ingest_bulk(service: Service, envelope: BulkEnvelope) -> Response:
    rejections = _Rejections()
    events = [_validated(lambda entry=entry: event_from_bulk_entry(entry), rejections) for entry in envelope.entries]
    valid = [event for event in events if event is not None]
    published = iter(await _publish(service, valid, rejections))
    statuses = [
        BulkEntryStatus(entry_id=entry.entry_id, status="DROP" if event is None else next(published))
        for entry, event in zip(envelope.entries, events, strict=True)
    ]
    rejections.report(service, len(envelope.entries))
    # One `.labels()` per status, not per entry: it takes a lock and validates every call.
    for status, count in collections.Counter(s.status for s in statuses).items():
        service.metrics.dapr_responses.labels(status).inc(count)
    return _answer(BulkResponse(statuses=statuses))


def _answer(payload: DaprResponse | BulkResponse) -> Response:
    return Response(msgspec.json.encode(payload), media_type="application/json", status_code=200)


def dapr_route_handlers(settings: Settings) -> list[HTTPRouteHandler]:
    # The delivery path is a setting, so its handler is registered at the configured path.
    return [dapr_subscribe, post(settings.dapr_route, name="dapr-events")(dapr_events)]
