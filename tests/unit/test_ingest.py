"""Ingest parsing, without HTTP."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasksync.ingest import (
    IngestError,
    _normalise_time,
    body_type,
    bulk_envelope,
    event_from_bulk_entry,
    event_from_cloudevent,
    event_from_payload,
    events_from_http_body,
)
from tests.support.events import bulk, cloudevent, payload


def test_cloudevent_id_becomes_the_event_id_and_source_is_dapr():
    ce = cloudevent(payload("u1", "task.completed"), event_id="ce-1")
    event = event_from_cloudevent(ce)
    assert (event.id, event.user_id, event.event, event.source) == ("ce-1", "u1", "task.completed", "dapr")


def test_cloudevent_data_as_json_text_and_base64_are_understood():
    data = payload("u2")
    as_text = {**cloudevent(None), "data": msgspec.json.encode(data).decode()}
    assert event_from_cloudevent(as_text).user_id == "u2"
    ce = cloudevent(None)
    del ce["data"]
    ce["data_base64"] = base64.b64encode(msgspec.json.encode(data)).decode()
    assert event_from_cloudevent(ce).user_id == "u2"


def test_occurred_at_is_normalised_to_utc_and_defaults_to_now():
    event = event_from_payload(
        {**payload("u"), "occurred_at": "2025-06-01T14:00:00+02:00"}, event_id="x", source="http"
    )
    assert event.occurred_at == "2025-06-01T12:00:00.000Z"
    assert event_from_payload(payload("u"), event_id="x", source="http").occurred_at.endswith("Z")


@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)))
def test_a_time_in_normal_form_is_kept_as_the_conversion_would_write_it(moment):
    normal = moment.isoformat(timespec="milliseconds") + "Z"
    converted = datetime.fromisoformat(normal).astimezone(UTC).isoformat(timespec="milliseconds")
    assert _normalise_time(normal) == normal == converted.replace("+00:00", "Z")


@pytest.mark.parametrize("text", ["2025-06-01T24:00:00.000Z", "2025-06-01T23:59:60.000Z", "2025-02-30T00:00:00.000Z"])
def test_a_time_in_the_normal_form_s_shape_must_still_be_a_time(text):
    with pytest.raises(IngestError) as caught:
        _normalise_time(text)
    assert caught.value.reason == "invalid_occurred_at"


def test_numeric_user_ids_are_accepted_as_text():
    assert event_from_payload({**payload("u"), "user_id": 42}, event_id="x", source="http").user_id == "42"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ("not an object", "invalid_json"),
        ({"user_id": "u", "task": {}}, "missing_event"),
        ({"event": "task.archived", "user_id": "u", "task": {}}, "unknown_event"),
        ({"event": ["task.created"], "user_id": "u", "task": {}}, "unknown_event"),
        ({"event": {"name": "task.created"}, "user_id": "u", "task": {}}, "unknown_event"),
        ({"event": "task.created", "task": {}}, "missing_user_id"),
        ({"event": "task.created", "user_id": "", "task": {}}, "missing_user_id"),
        ({"event": "task.created", "user_id": ["u"], "task": {}}, "invalid_user_id"),
        ({"event": "task.created", "user_id": "x" * 300, "task": {}}, "invalid_user_id"),
        ({"event": "task.created", "user_id": "u\n", "task": {}}, "invalid_user_id"),
        ({"event": "task.created", "user_id": "u"}, "invalid_task"),
        ({"event": "task.created", "user_id": "u", "task": 5}, "invalid_task"),
        ({"event": "task.created", "user_id": "u", "task": {}, "occurred_at": 5}, "invalid_occurred_at"),
        # Valid ISO 8601, but the offset takes them before year 1 or after 9999 in UTC.
        (
            {"event": "task.created", "user_id": "u", "task": {}, "occurred_at": "0001-01-01T00:00:00+01:00"},
            "invalid_occurred_at",
        ),
        (
            {"event": "task.created", "user_id": "u", "task": {}, "occurred_at": "9999-12-31T23:59:59-01:00"},
            "invalid_occurred_at",
        ),
    ],
)
def test_invalid_cloudevent_data(data, reason):
    with pytest.raises(IngestError) as caught:
        event_from_cloudevent(cloudevent(data))
    assert caught.value.reason == reason


def test_cloudevent_without_id_or_data():
    with pytest.raises(IngestError, match="no 'id'"):
        event_from_cloudevent({"specversion": "1.0", "data": payload("u")})
    with pytest.raises(IngestError, match="no 'data'") as caught:
        event_from_cloudevent({"specversion": "1.0", "id": "x"})
    assert caught.value.reason == "missing_data"


def test_bulk_entries_parse_cloudevents_and_raw_payloads():
    envelope = bulk_envelope(msgspec.json.encode(bulk([cloudevent(payload("a"), event_id="ce"), payload("b")])))
    first, second = (event_from_bulk_entry(entry) for entry in envelope.entries)
    assert (first.id, first.user_id) == ("ce", "a")
    # A raw payload without an id of its own takes the entry id.
    assert (second.id, second.user_id) == ("entry-1", "b")


def test_bulk_envelope_must_have_entries():
    with pytest.raises(IngestError) as caught:
        bulk_envelope(b'{"type": "com.dapr.event.sent.bulk"}')
    assert caught.value.reason == "invalid_bulk"


def test_http_body_single_or_batch_and_all_or_nothing():
    assert len(events_from_http_body(msgspec.json.encode(payload("u")))) == 1
    assert len(events_from_http_body(msgspec.json.encode([payload("u"), payload("v")]))) == 2
    with pytest.raises(IngestError, match="item 1: ") as caught:
        events_from_http_body(msgspec.json.encode([payload("u"), {"event": "task.created", "user_id": "u"}]))
    assert caught.value.reason == "invalid_task"
    with pytest.raises(IngestError, match="empty"):
        events_from_http_body(b"[]")


def test_http_event_id_is_taken_from_the_body_or_generated():
    with_id = events_from_http_body(msgspec.json.encode({**payload("u"), "id": "mine"}))[0]
    assert with_id.id == "mine"
    generated = events_from_http_body(msgspec.json.encode(payload("u")))[0]
    assert len(generated.id) == 32


def test_the_operation_id_is_carried_from_the_body_or_the_cloudevent_extension():
    assert events_from_http_body(msgspec.json.encode(payload("u")))[0].op_id is None
    assert events_from_http_body(msgspec.json.encode({**payload("u"), "op_id": "tab7.3"}))[0].op_id == "tab7.3"
    assert event_from_cloudevent(cloudevent({**payload("u"), "op_id": "in-data"})).op_id == "in-data"
    # The extension attribute is the envelope's word, as the CloudEvent id is for the event id.
    extended = {**cloudevent({**payload("u"), "op_id": "in-data"}), "opid": "in-envelope"}
    assert event_from_cloudevent(extended).op_id == "in-envelope"


@pytest.mark.parametrize("op_id", ["", "x" * 65, 7, ["a"], "tab\n1"])
def test_an_operation_id_must_be_a_short_printable_string(op_id):
    with pytest.raises(IngestError) as caught:
        events_from_http_body(msgspec.json.encode({**payload("u"), "op_id": op_id}))
    assert caught.value.reason == "invalid_op_id"
    with pytest.raises(IngestError) as caught:
        event_from_cloudevent({**cloudevent(payload("u")), "opid": op_id})
    assert caught.value.reason == "invalid_op_id"
    assert events_from_http_body(msgspec.json.encode({**payload("u"), "op_id": "x" * 64}))[0].op_id == "x" * 64


def test_deep_nesting_is_an_ingest_error_not_a_crash():
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(IngestError, match="nested too deeply"):
        events_from_http_body(deep)
    task: dict = {}
    cursor = task
    for _ in range(40):
        cursor["child"] = {}
        cursor = cursor["child"]
    with pytest.raises(IngestError, match="deeper than 32") as caught:
        event_from_payload({**payload("u"), "task": task}, event_id="x", source="http")
    assert caught.value.reason == "invalid_task"


def test_huge_numbers_are_refused_as_invalid_json():
    with pytest.raises(IngestError) as caught:
        events_from_http_body(b'{"event": "task.created", "user_id": "u", "task": {"n": 1e99999}}')
    assert caught.value.reason == "invalid_json"


def test_body_type_reads_the_top_level_type_or_none():
    envelope = b'{"type": "com.dapr.event.sent.bulk", "entries": [{"deep": [1, 2]}]}'
    assert body_type(envelope) == "com.dapr.event.sent.bulk"
    assert body_type(b'{"id": "x"}') is None
    assert body_type(b"[1, 2]") is None
    with pytest.raises(IngestError) as error:
        body_type(b'{"type": "x", "entries": [')
    assert error.value.reason == "invalid_json"
