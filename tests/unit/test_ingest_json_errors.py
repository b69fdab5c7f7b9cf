"""Every way JSON enters ingest maps malformed JSON the same way: `invalid_json`, naming where."""

from __future__ import annotations

import base64

import pytest

from tasksync.ingest import (
    BulkEntry,
    IngestError,
    body_type,
    bulk_envelope,
    decode_json,
    event_from_bulk_entry,
    event_from_cloudevent,
)

DEEP = b"[" * 100_000 + b"]" * 100_000
# Object-shaped where the typed decoders (bulk envelope, type probe) take anything, so each case
# reaches the JSON error itself rather than a wrong-shape error first.
MALFORMED = {
    "truncated": b'{"event": ',
    "not utf-8": b"\xff\xfe",
    "nested past the recursion limit": (
        b'{"entries": [{"entryId": "e", "event": ' + DEEP + b'}], "type": ' + DEEP + b"}"
    ),
}
# Only an untyped decode turns a number past float range into an error of JSON itself.
OUT_OF_RANGE = b'{"task": {"n": 1e99999}}'


def entry_points():
    yield "body", body_type
    yield "body", bulk_envelope
    yield from untyped_entry_points()


def untyped_entry_points():
    yield "body", decode_json
    yield "CloudEvent 'data'", lambda raw: event_from_cloudevent(
        {"id": "c1", "data": raw.decode(errors="replace")}
    )
    yield "CloudEvent 'data_base64'", lambda raw: event_from_cloudevent(
        {"id": "c1", "data_base64": base64.b64encode(raw).decode()}
    )
    yield "CloudEvent 'event'", lambda raw: event_from_bulk_entry(
        BulkEntry(entry_id="e1", event=raw.decode(errors="replace"))
    )


CASES = [
    pytest.param(where, ingest, malformed, id=f"{index}-{where}-{name}")
    for index, (where, ingest) in enumerate(entry_points())
    for name, malformed in MALFORMED.items()
] + [
    pytest.param(where, ingest, OUT_OF_RANGE, id=f"{index}-{where}-out of range")
    for index, (where, ingest) in enumerate(untyped_entry_points())
]


@pytest.mark.parametrize(("where", "ingest", "malformed"), CASES)
def test_malformed_json_is_invalid_json_wherever_it_enters(where, ingest, malformed):
    with pytest.raises(IngestError) as caught:
        ingest(malformed)
    assert caught.value.reason == "invalid_json"
    assert caught.value.message.startswith(f"{where} is ")
