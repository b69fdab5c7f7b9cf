"""The typed decoding of HTTP bodies against the field-by-field checks it stands in for.

`events_from_http_body` decodes a body straight into typed payloads and hands any body that does
not fit to the checks that word the errors. These tests hold the two to each other: the typed
path accepts exactly the bodies the checks accept, with equal events, and whatever it gives up
on is answered with the reason and message the checks give.
"""

from __future__ import annotations

import os
import uuid
from typing import Any
from unittest import mock

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasksync import ingest
from tasksync.events import EVENT_NAMES, TaskEvent
from tasksync.ingest import IngestError, events_from_http_body

EXAMPLES = int(os.environ.get("TASKSYNC_FUZZ_EXAMPLES", "600"))
NOW = "2001-02-03T04:05:06.789Z"
GENERATED = uuid.UUID("00000000-0000-4000-8000-000000000000")

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def nested(depth: int, innermost: Any) -> Any:
    """A task `depth` containers deep, mixing objects and arrays."""
    value = innermost
    for level in range(depth - 1):
        value = {"child": value} if level % 2 else [value]
    return {"child": value} if depth > 1 else {}


def strings_near(limit: int) -> st.SearchStrategy[str]:
    """Strings at and either side of a length limit, one byte or four per character in UTF-8."""
    return st.builds(
        lambda length, char: char * length,
        st.sampled_from([0, 1, limit - 1, limit, limit + 1]),
        st.sampled_from(["x", "é", "😀", "\n", "\x00", "\u2028", " "]),
    )


odd_text = st.text(max_size=12) | st.sampled_from(["u\n", "tab\t", "\x7f", "\u200b", "🙂", "", " "])
printable = st.text(st.characters(categories=["L", "N", "P", "S", "Zs"]), min_size=1, max_size=12)
some_times = st.sampled_from(
    [
        "2025-06-01T14:00:00+02:00",
        "2025-06-01T12:00:00Z",
        "2025-06-01T12:00:00.123456Z",
        "2025-06-01T12:00:00.123Z",
        "2025-06-01T24:00:00.000Z",
        "2025-06-01T23:59:60.000Z",
        "2025-06-01T12:00:00,5Z",
        "2025-06-01T12:00:00",
        "2025-06-01",
        "2025-W22-7T12:00:00Z",
        "20250601T120000Z",
        "2025-06-01 12:00:00.1+05:30",
        # Valid ISO 8601 and out of range, or not valid at all.
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        "2025-02-30T00:00:00Z",
        "2025-06-01T24:00:00Z",
        "2025-06-01T23:59:60Z",
        "yesterday",
        "",
    ]
)

# Each field: (values the checks accept, or most of them; values they may refuse).
FIELDS: dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]] = {
    "event": (
        st.sampled_from(sorted(EVENT_NAMES)),
        st.sampled_from(["task.archived", "", "TASK.CREATED"]) | json_values,
    ),
    "user_id": (
        printable | st.integers(),
        strings_near(ingest.MAX_USER_ID_LENGTH)
        | odd_text
        | st.integers(min_value=2**63 - 2, max_value=2**64 + 2)
        | st.integers(min_value=-(2**63) - 2, max_value=-(2**63) + 2)
        | st.integers(min_value=10**254, max_value=10**257)
        | st.booleans()
        | st.floats(allow_nan=False)
        | json_values,
    ),
    "task": (
        st.dictionaries(st.text(max_size=8), json_values, max_size=5),
        st.builds(
            nested, st.integers(min_value=ingest.MAX_TASK_DEPTH - 2, max_value=ingest.MAX_TASK_DEPTH + 2), scalars
        )
        | json_values,
    ),
    "occurred_at": (
        st.none() | st.datetimes(timezones=st.none() | st.timezones()).map(lambda moment: moment.isoformat()),
        some_times | odd_text | json_values,
    ),
    "id": (st.none() | printable, strings_near(ingest.MAX_EVENT_ID_LENGTH) | odd_text | json_values),
    "op_id": (st.none() | printable, strings_near(ingest.MAX_OP_ID_LENGTH) | odd_text | json_values),
}
REQUIRED = ("event", "user_id", "task")
PAYLOAD_FIELDS = set(FIELDS)


@st.composite
def payloads(draw: st.DrawFn) -> Any:
    """An event payload: each field most often valid, else adversarial or missing; now and then
    fields of its own besides."""
    payload: dict[str, Any] = {}
    for name, (valid, adversarial) in FIELDS.items():
        choice = draw(st.integers(0, 7))
        if choice == 0 or (choice == 1 and name not in REQUIRED):
            continue
        payload[name] = draw(adversarial if choice == 2 else valid)
    if draw(st.integers(0, 5)) == 0:
        payload.update(
            draw(st.dictionaries(st.sampled_from(["source", "notification", "received_ns", "x"]), json_values))
        )
    return payload


bodies = (
    payloads()
    | st.lists(payloads(), max_size=4)
    | st.lists(payloads() | json_values, min_size=1, max_size=3)
    | json_values
).map(msgspec.json.encode)


def outcome(parse, raw: bytes) -> list[TaskEvent] | tuple[str, str]:
    """The events (without their process-local ingest instant), or the error's reason and message.
    The time and the id that ingest would generate are fixed for the comparison."""
    with (
        mock.patch.object(ingest, "utc_now_iso", return_value=NOW),
        mock.patch.object(ingest.uuid, "uuid4", return_value=GENERATED),
    ):
        try:
            parsed = parse(raw)
        except IngestError as error:
            return error.reason, error.message
    if parsed is None:
        return []
    return [msgspec.structs.replace(event, received_ns=0) for event in parsed]


def fields_of_its_own(raw: bytes) -> bool:
    """Whether a payload of the body has a field an event payload does not define (the typed
    path leaves those to the checks)."""
    body = msgspec.json.decode(raw)
    items = body if isinstance(body, list) else [body]
    return any(isinstance(item, dict) and not item.keys() <= PAYLOAD_FIELDS for item in items)


@settings(max_examples=EXAMPLES, deadline=None)
@given(bodies)
def test_the_typed_path_accepts_what_the_checks_accept_and_no_more(raw):
    checked = outcome(ingest._events_from_checked_body, raw)
    typed = outcome(ingest._events_from_typed_body, raw)
    if typed:
        assert typed == checked
    elif isinstance(checked, list):
        assert fields_of_its_own(raw), "a valid body without fields of its own missed the typed path"


@settings(max_examples=EXAMPLES, deadline=None)
@given(bodies)
def test_every_body_gets_the_answer_of_the_checks(raw):
    assert outcome(events_from_http_body, raw) == outcome(ingest._events_from_checked_body, raw)


VALID = b'"event": "task.created", "user_id": "u", "task": {}'


@pytest.mark.parametrize(
    "raw",
    [
        # Duplicate keys: the last one counts, as in a plain decode, whichever of them is valid.
        b"{" + VALID + b', "user_id": "v"}',
        b"{" + VALID + b', "user_id": 7}',
        b"{" + VALID + b', "user_id": ""}',
        b"{" + VALID + b', "event": "task.exploded"}',
        b'{"event": 5, ' + VALID + b"}",
        b"{" + VALID + b', "id": "mine", "id": null}',
        b"{" + VALID + b', "task": []}',
        b"{" + VALID + b', "op_id": "a", "op_id": "b\\n"}',
        # JSON that is not valid, or numbers past what a decode takes.
        b"{" + VALID + b', "n": 1e99999}',
        b"{" + VALID + b', "n": -1' + b"0" * 400 + b"}",
        b"{" + VALID + b', "n": "\\ud800"}',
        b"{" + VALID + b', "n": "\xff"}',
        b"{" + VALID + b', "user_id": 1' + b"0" * 400 + b"}",
        b"[" + b"{" + VALID + b"}," * 3 + b"]",
        b"[]",
        b"[" * 100_000 + b"]" * 100_000,
        b"{" + VALID.replace(b"{}", b'{"a": ' + b"[" * 40 + b"]" * 40 + b"}") + b"}",
    ],
)
def test_bodies_a_generated_payload_cannot_be(raw):
    assert outcome(events_from_http_body, raw) == outcome(ingest._events_from_checked_body, raw)


def test_valid_bodies_take_the_typed_path():
    raw = msgspec.json.encode(
        [
            {"event": "task.updated", "user_id": 42, "task": {"id": 1, "tags": ["a"]}, "id": "e1"},
            {"event": "task.deleted", "user_id": "u", "task": {}, "occurred_at": "2025-06-01T14:00:00+02:00"},
            {"event": "task.created", "user_id": "u", "task": nested(ingest.MAX_TASK_DEPTH, 1), "op_id": "tab.1"},
        ]
    )
    typed = outcome(ingest._events_from_typed_body, raw)
    assert [(event.user_id, event.id, event.occurred_at, event.op_id) for event in typed] == [
        ("42", "e1", NOW, None),
        ("u", GENERATED.hex, "2025-06-01T12:00:00.000Z", None),
        ("u", GENERATED.hex, NOW, "tab.1"),
    ]
    assert typed == outcome(ingest._events_from_checked_body, raw)
