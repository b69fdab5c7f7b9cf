"""HTTP publish for backends without Dapr: POST /v1/events with a bearer API key."""

from __future__ import annotations

import logging
import math

from litestar import Request, Response, post

from ..broker import BrokerUnavailable
from ..ingest import IngestError, events_from_http_body
from .common import read_body, same_secret, service_of

log = logging.getLogger("tasksync.publish")

RETRY_AFTER_SECONDS = "2"


def _error(status: int, reason: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response({"error": reason, "message": message}, status_code=status, headers=headers)


@post("/v1/events")
async def publish_events(request: Request) -> Response:
    service = service_of(request)
    metrics = service.metrics
    keys = service.settings.api_keys
    # In development mode without keys every caller shares one rate-limit bucket.
    caller = "anonymous"
    if keys or not service.settings.dev:
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        matched = next((key for key in keys if same_secret(given.strip(), key)), None)
        if scheme.lower() != "bearer" or matched is None:
            metrics.ingest_errors.labels("http", "unauthorized").inc()
            return _error(
                401, "unauthorized", "send 'Authorization: Bearer <API key>'", {"WWW-Authenticate": "Bearer"}
            )
        caller = matched
    if not service.publish_buckets.allow(caller):
        metrics.rate_limited.labels("publish").inc()
        wait = max(1, math.ceil(service.publish_buckets.retry_after(caller)))
        return _error(429, "rate_limited", "too many publish requests for this API key", {"Retry-After": str(wait)})
    raw = await read_body(request)
    if raw is None:
        metrics.ingest_errors.labels("http", "too_large").inc()
        return _error(413, "too_large", f"body larger than {service.settings.max_body_bytes} bytes")
    try:
        events = events_from_http_body(raw)
    except IngestError as error:
        metrics.ingest_errors.labels("http", error.reason).inc()
        return _error(400 if error.reason == "invalid_json" else 422, error.reason, error.message)
    outcomes = await service.ingest_many(events)
    failed = [outcome for outcome in outcomes if isinstance(outcome, BrokerUnavailable)]
    if failed:
        metrics.ingest_errors.labels("http", "broker_unavailable").inc()
        log.warning("refusing publish, broker unavailable: %s", failed[0])
        # The stored events are deduplicated by id when the whole batch is retried.
        stored = len(events) - len(failed)
        return _error(
            503,
            "broker_unavailable",
            f"broker unavailable: {stored} of {len(events)} events stored; retry the batch",
            {"Retry-After": RETRY_AFTER_SECONDS},
        )
    duplicates = outcomes.count("duplicate")
    return Response({"accepted": len(outcomes) - duplicates, "duplicates": duplicates}, status_code=202)
