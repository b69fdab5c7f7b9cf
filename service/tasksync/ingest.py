"""Ingest: turn a CloudEvent, a Dapr bulk envelope or an HTTP publish body into TaskEvents.

Pure functions, no I/O: each either returns typed events or raises IngestError with a reason
(the metric label) and a message that tells the publisher what was wrong. Whether a failure is
permanent (Dapr DROP, HTTP 4xx) or transient (Dapr RETRY, HTTP 503) is decided by the caller:
everything raised here is permanent, because the same bytes will never become valid.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, cast

import msgspec

from .events import EVENT_NAMES, EventName, TaskEvent
from .protocol import utc_now_iso

MAX_USER_ID_LENGTH = 256
MAX_EVENT_ID_LENGTH = 256
# An operation id names one user action, not a record: short, so every frame can carry it.
MAX_OP_ID_LENGTH = 64
# Tasks are records, not trees: a bound on nesting keeps a hostile task from exhausting the
# recursion depth when the frame is encoded (decoding alone would allow far deeper).
MAX_TASK_DEPTH = 32

DaprStatus = Literal["SUCCESS", "RETRY", "DROP"]


class IngestError(Exception):
    """An input that can never become a valid event. `reason` is a short metric label."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


class DaprResponse(msgspec.Struct):
    status: DaprStatus


class BulkEntryStatus(msgspec.Struct, rename="camel"):
    entry_id: str
    status: DaprStatus


class BulkResponse(msgspec.Struct):
    statuses: list[BulkEntryStatus]


class BulkEntry(msgspec.Struct, rename="camel"):
    entry_id: str
    event: Any = None
    content_type: str = ""
    metadata: dict[str, str] = {}


class BulkEnvelope(msgspec.Struct):
    """Dapr's bulk-subscribe request body (type com.dapr.event.sent.bulk)."""

    entries: list[BulkEntry]
    id: str = ""
    pubsubname: str = ""
    topic: str = ""
    type: str = ""
    metadata: dict[str, str] = {}


_json = msgspec.json.Decoder()


class _TypeProbe(msgspec.Struct):
    type: Any = None


_type_probe = msgspec.json.Decoder(_TypeProbe)
_bulk_envelope = msgspec.json.Decoder(BulkEnvelope)


class _TypedPayload(msgspec.Struct, forbid_unknown_fields=True):
    """An event payload of the types and lengths `event_from_payload` accepts, as far as msgspec
    can say so while decoding (in C). What it cannot say (printable ids, the task's depth, the
    time's normalisation, numeric user ids as text) `_event_from_typed` checks and does.

    A payload with fields of its own is left to the checks: msgspec skips an unknown field
    without the range check on its numbers that a plain decode makes."""

    event: EventName
    user_id: str | int
    task: dict[str, Any]
    occurred_at: str | None = None
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_EVENT_ID_LENGTH)] | None = None
    op_id: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_OP_ID_LENGTH)] | None = None


_typed_http_body = msgspec.json.Decoder(_TypedPayload | list[_TypedPayload])


def _decode(decoder: msgspec.json.Decoder[Any], raw: bytes, what: str) -> Any:
    """Decode `raw`; bytes that are not JSON, or JSON nested past the recursion limit, become
    `invalid_json` naming `what`. A typed decoder's `msgspec.ValidationError` (JSON of the wrong
    shape) is left to the caller, which knows what shape it expected."""
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        if decoder.type is not Any:
            raise
        # Untyped, JSON fails validation only on a number past float range: malformed input.
        raise IngestError("invalid_json", f"{what} is not valid JSON: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise IngestError("invalid_json", f"{what} is not valid JSON: {exc}") from exc
    except RecursionError:
        raise IngestError("invalid_json", f"{what} is nested too deeply") from None


def decode_json(raw: bytes) -> Any:
    return _decode(_json, raw, "body")


def body_type(raw: bytes) -> Any:
    """The top-level `type` of a JSON body (None when it is not an object or has none), read
    without building the rest of it: a bulk envelope is then decoded once, into its type."""
    try:
        return _decode(_type_probe, raw, "body").type
    except msgspec.ValidationError:
        return None


def event_from_payload(payload: Any, *, event_id: str | None, source: str, op_id: Any = None) -> TaskEvent:
    """Validate the event payload `{"event", "user_id", "task", "occurred_at"?, "op_id"?}`.

    `op_id`, when given, is the operation id from outside the payload (a CloudEvent extension);
    it takes the place of the payload's own."""
    if not isinstance(payload, dict):
        raise IngestError("invalid_payload", f"event payload must be a JSON object, got {_kind(payload)}")
    name = payload.get("event")
    if name is None:
        raise IngestError("missing_event", "event payload has no 'event' field")
    if not isinstance(name, str) or name not in EVENT_NAMES:
        shown = repr(name[:64]) if isinstance(name, str) else f"of type {_kind(name)}"
        raise IngestError(
            "unknown_event",
            f"unknown event {shown}; expected one of {', '.join(sorted(EVENT_NAMES))}",
        )
    user_id = payload.get("user_id")
    if user_id is None or user_id == "":
        raise IngestError("missing_user_id", "event payload has no 'user_id'")
    if isinstance(user_id, int) and not isinstance(user_id, bool):
        user_id = str(user_id)  # numeric ids are common in task backends; the wire form is text
    if not isinstance(user_id, str) or len(user_id) > MAX_USER_ID_LENGTH or not user_id.isprintable():
        raise IngestError(
            "invalid_user_id",
            f"'user_id' must be a printable string of at most {MAX_USER_ID_LENGTH} characters",
        )
    task = payload.get("task")
    if not isinstance(task, dict):
        raise IngestError("invalid_task", f"'task' must be a JSON object, got {_kind(task)}")
    if _deeper_than(task, MAX_TASK_DEPTH):
        raise IngestError("invalid_task", f"'task' is nested deeper than {MAX_TASK_DEPTH} levels")
    occurred_at = payload.get("occurred_at")
    occurred_at = utc_now_iso() if occurred_at is None else _normalise_time(occurred_at)
    if event_id is None:
        event_id = payload.get("id")
    if event_id is None:
        # Without a publisher id the event cannot be deduplicated across retries; docs say so.
        event_id = uuid.uuid4().hex
    if not isinstance(event_id, str) or not event_id or len(event_id) > MAX_EVENT_ID_LENGTH:
        raise IngestError(
            "invalid_id", f"event 'id' must be a non-empty string of at most {MAX_EVENT_ID_LENGTH} characters"
        )
    return TaskEvent(
        id=event_id,
        user_id=user_id,
        event=cast(EventName, name),
        task=task,
        occurred_at=occurred_at,
        source=source,
        op_id=_op_id(payload.get("op_id") if op_id is None else op_id),
    )


def event_from_cloudevent(cloudevent: Any) -> TaskEvent:
    """A structured CloudEvent (as Dapr delivers it) whose `data` is the event payload."""
    if not isinstance(cloudevent, dict):
        raise IngestError("invalid_cloudevent", f"CloudEvent must be a JSON object, got {_kind(cloudevent)}")
    event_id = cloudevent.get("id")
    if not isinstance(event_id, str) or not event_id:
        raise IngestError("invalid_cloudevent", "CloudEvent has no 'id'")
    if "data" in cloudevent:
        data = cloudevent["data"]
        if isinstance(data, str):
            # A publisher that sent JSON as text/plain: Dapr keeps it as a string.
            data = _decode_embedded_json(data.encode(), "data")
    elif "data_base64" in cloudevent:
        try:
            raw = base64.b64decode(cloudevent["data_base64"], validate=True)
        except (binascii.Error, TypeError, ValueError) as exc:
            raise IngestError("invalid_cloudevent", "CloudEvent 'data_base64' is not base64") from exc
        data = _decode_embedded_json(raw, "data_base64")
    else:
        raise IngestError("missing_data", "CloudEvent has no 'data'")
    # CloudEvents extension names are lowercase letters and digits only, hence `opid`.
    return event_from_payload(data, event_id=event_id, source="dapr", op_id=cloudevent.get("opid"))


def bulk_envelope(raw: bytes) -> BulkEnvelope:
    try:
        return _decode(_bulk_envelope, raw, "body")
    except msgspec.ValidationError as exc:
        raise IngestError("invalid_bulk", f"not a Dapr bulk envelope: {exc}") from exc


def event_from_bulk_entry(entry: BulkEntry) -> TaskEvent:
    event = entry.event
    if isinstance(event, str):
        event = _decode_embedded_json(event.encode(), "event")
    if isinstance(event, dict) and "specversion" in event:
        return event_from_cloudevent(event)
    # rawPayload subscriptions deliver the payload itself: its own `id`, else the entry id.
    own_id = isinstance(event, dict) and event.get("id") is not None
    return event_from_payload(event, event_id=None if own_id else entry.entry_id, source="dapr")


def events_from_http_body(raw: bytes) -> list[TaskEvent]:
    """One event object or a JSON array of them. All-or-nothing: one bad item rejects the batch,
    so a publisher never has to work out which half of its batch landed.

    A valid body is decoded straight into typed payloads; any other is decoded again and checked
    field by field, which is what words the error."""
    events = _events_from_typed_body(raw)
    return _events_from_checked_body(raw) if events is None else events


def _events_from_typed_body(raw: bytes) -> list[TaskEvent] | None:
    """The events of a valid body, or None if anything is wrong with it (or might be: this path
    never words an error, so it gives up on whatever it cannot accept outright)."""
    try:
        body = _typed_http_body.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return None
    payloads = body if isinstance(body, list) else (body,)
    if not payloads:
        return None
    # Every bracket of the body but the array's and each payload's and task's own may nest a
    # task deeper; with fewer of them than the limit (flat tasks), no task needs walking.
    nesting = raw.count(b"{") + raw.count(b"[") - 2 * len(payloads) - (payloads is body)
    check_depth = nesting >= MAX_TASK_DEPTH
    events = []
    for payload in payloads:
        event = _event_from_typed(payload, "http", check_depth)
        if event is None:
            return None
        events.append(event)
    return events


def _event_from_typed(payload: _TypedPayload, source: str, check_depth: bool) -> TaskEvent | None:
    """`event_from_payload`'s answer for a payload of the right types, or None where it would
    raise; the checks are those of `event_from_payload` that the types leave out (the task's
    depth only if `check_depth`)."""
    user_id = payload.user_id if isinstance(payload.user_id, str) else str(payload.user_id)
    if not user_id or len(user_id) > MAX_USER_ID_LENGTH or not user_id.isprintable():
        return None
    task = payload.task
    if check_depth and _deeper_than(task, MAX_TASK_DEPTH):
        return None
    occurred_at = payload.occurred_at
    if occurred_at is None:
        occurred_at = utc_now_iso()
    else:
        try:
            occurred_at = _normalise_time(occurred_at)
        except IngestError:
            return None
    op_id = payload.op_id
    if op_id is not None and not op_id.isprintable():
        return None
    return TaskEvent(
        id=uuid.uuid4().hex if payload.id is None else payload.id,
        user_id=user_id,
        event=payload.event,
        task=task,
        occurred_at=occurred_at,
        source=source,
        op_id=op_id,
    )


def _events_from_checked_body(raw: bytes) -> list[TaskEvent]:
    body = decode_json(raw)
    items = body if isinstance(body, list) else [body]
    if not items:
        raise IngestError("empty_batch", "batch is an empty array")
    events: list[TaskEvent] = []
    for index, item in enumerate(items):
        try:
            events.append(event_from_payload(item, event_id=None, source="http"))
        except IngestError as exc:
            where = f"item {index}: " if isinstance(body, list) else ""
            raise IngestError(exc.reason, where + exc.message) from exc
    return events


def _decode_embedded_json(raw: bytes, field: str) -> Any:
    return _decode(_json, raw, f"CloudEvent '{field}'")


def _op_id(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_OP_ID_LENGTH or not value.isprintable():
        raise IngestError(
            "invalid_op_id", f"'op_id' must be a non-empty printable string of at most {MAX_OP_ID_LENGTH} characters"
        )
    return value


# The normal form of a time, as `utc_now_iso` writes it and TaskSync's publishers send it: a
# time in it that parses is its own normal form, without the 1.2 µs of converting it. Hours,
# minutes and seconds are bounded here too, so a parser that read 24:00 or a leap second as
# the next day or minute could not make a time in this form stand for another.
_NORMAL_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\.[0-9]{3}Z")


def _normalise_time(value: Any) -> str:
    if not isinstance(value, str):
        raise IngestError("invalid_occurred_at", "'occurred_at' must be an ISO 8601 string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise IngestError("invalid_occurred_at", f"'occurred_at' is not ISO 8601: {value[:64]!r}") from exc
    if _NORMAL_TIME.fullmatch(value):
        return value
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        in_utc = parsed.astimezone(UTC)
    except OverflowError:
        # A valid ISO 8601 time whose offset moves it past year 1 or 9999 in UTC.
        raise IngestError("invalid_occurred_at", f"'occurred_at' is out of range in UTC: {value[:64]!r}") from None
    return in_utc.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _deeper_than(value: dict[str, Any] | list[Any], limit: int) -> bool:
    """Whether containers nest in `value` (level 1) past level `limit`. Level by level: a flat
    task, the common one, costs one pass over its values."""
    level: list[Any] = [value]
    depth = 1
    while level:
        if depth > limit:
            return True
        level = [
            child
            for item in level
            for child in (item.values() if isinstance(item, dict) else item)
            if isinstance(child, (dict, list))
        ]
        depth += 1
    return False


def _kind(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )
