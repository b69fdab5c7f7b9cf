"""The protocol codec, without sockets."""

from __future__ import annotations

import time
from types import SimpleNamespace

import msgspec
import pytest

from tasksync import protocol
from tasksync.events import Notification, TaskEvent
from tasksync.protocol import (
    Auth,
    Connected,
    Ping,
    Pong,
    ProtocolError,
    Resume,
    ResyncRequired,
    close_reason,
    decode_client_frame,
    encode,
    encode_task_update,
    utc_now_iso,
)

# The fields of the original client specification's WebSocketMessage.
SPECIFICATION_FIELDS = {"type", "event", "task", "timestamp"}


def event(**overrides) -> TaskEvent:
    fields = {
        "id": "e1",
        "user_id": "u",
        "event": "task.created",
        "task": {"id": 123, "title": "New Task", "completed": False},
        "occurred_at": "2025-12-31T12:00:00.000Z",
    }
    fields.update(overrides)
    return TaskEvent(**fields)


def test_task_update_is_a_superset_of_the_specification_message():
    frame = msgspec.json.decode(encode_task_update(event(), seq=7, epoch="m-1"))
    assert frame.keys() >= SPECIFICATION_FIELDS
    assert frame == {
        "type": "task_update",
        "event": "task.created",
        "task": {"id": 123, "title": "New Task", "completed": False},
        "timestamp": "2025-12-31T12:00:00.000Z",
        "id": "e1",
        "seq": 7,
        "epoch": "m-1",
    }


def test_task_update_carries_the_notification_when_there_is_one():
    note = Notification(title="Task created", body="New Task", kind="success")
    frame = msgspec.json.decode(encode_task_update(event(notification=note), seq=1, epoch="m"))
    assert frame["notification"] == {"title": "Task created", "body": "New Task", "kind": "success"}


def test_task_update_carries_the_operation_id_unchanged_when_the_publisher_gave_one():
    frame = msgspec.json.decode(encode_task_update(event(op_id="tab7.3"), seq=1, epoch="m"))
    assert frame["op_id"] == "tab7.3"
    assert "op_id" not in msgspec.json.decode(encode_task_update(event(), seq=1, epoch="m"))


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (Ping(timestamp="t"), {"type": "ping", "timestamp": "t"}),
        (
            Connected(user_id="u", connection_id="c", seq=3, epoch="m", heartbeat_interval=25.0, resumed=True),
            {
                "type": "connected",
                "user_id": "u",
                "connection_id": "c",
                "seq": 3,
                "epoch": "m",
                "heartbeat_interval": 25.0,
                "resumed": True,
            },
        ),
        (
            ResyncRequired(reason="history_gap", seq=9, epoch="m"),
            {"type": "resync_required", "reason": "history_gap", "seq": 9, "epoch": "m"},
        ),
    ],
)
def test_server_frames_encode_with_their_type_tag(frame, expected):
    assert msgspec.json.decode(encode(frame)) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"type": "pong"}', Pong()),
        ('{"type": "auth", "token": "abc"}', Auth(token="abc")),
        ('{"type": "resume", "since": 4, "epoch": "m-1"}', Resume(since=4, epoch="m-1")),
    ],
)
def test_client_frames_decode(text, expected):
    assert decode_client_frame(text) == expected


@pytest.mark.parametrize(
    ("text", "code", "says"),
    [
        ("{", "invalid_json", "not valid JSON"),
        (b"\xff\xfe", "invalid_json", "not valid JSON"),
        ("[]", "invalid_frame", "JSON object"),
        ("{}", "invalid_frame", "no 'type'"),
        ('{"type": "subscribe"}', "unknown_type", "'subscribe'"),
        ('{"type": 3}', "unknown_type", "int"),
        ('{"type": "auth"}', "invalid_frame", "token"),
        ('{"type": "resume", "since": -1, "epoch": "m"}', "invalid_frame", ">= 0"),
        ('{"type": "resume", "since": 1}', "invalid_frame", "epoch"),
    ],
)
def test_bad_client_frames_say_what_was_wrong(text, code, says):
    with pytest.raises(ProtocolError) as caught:
        decode_client_frame(text)
    assert caught.value.code == code
    assert says in caught.value.message
    assert caught.value.to_frame().code == code


def test_close_reason_fits_rfc6455_without_splitting_a_character():
    reason = close_reason("é" * 100)
    assert len(reason.encode()) <= 123
    assert reason.endswith("...")
    assert close_reason("short") == "short"


def test_timestamps_are_utc_iso8601_with_z():
    stamp = utc_now_iso()
    assert stamp.endswith("Z") and "T" in stamp


def test_timestamps_follow_the_clock_across_milliseconds_and_seconds(monkeypatch):
    # Each second and each millisecond is formatted once and kept; the clock may also go back.
    clock = {"ns": 0}
    monkeypatch.setattr(
        protocol, "time", SimpleNamespace(time_ns=lambda: clock["ns"], strftime=time.strftime, gmtime=time.gmtime)
    )
    for ns, expected in [
        (1_700_000_000_123_456_789, "2023-11-14T22:13:20.123Z"),
        (1_700_000_000_123_999_999, "2023-11-14T22:13:20.123Z"),
        (1_700_000_000_124_000_000, "2023-11-14T22:13:20.124Z"),
        (1_700_000_001_000_000_000, "2023-11-14T22:13:21.000Z"),
        (1_700_000_002_124_000_000, "2023-11-14T22:13:22.124Z"),
        (1_700_000_000_999_000_000, "2023-11-14T22:13:20.999Z"),
    ]:
        clock["ns"] = ns
        assert utc_now_iso() == expected


def test_deeply_nested_frames_are_refused_not_crashed_on():
    for text in ("[" * 100_000 + "]" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000):
        with pytest.raises(ProtocolError, match="nested too deeply"):
            decode_client_frame(text)


def test_duplicate_keys_take_the_last_value():
    assert decode_client_frame('{"type": "auth", "token": "first", "token": "last"}') == Auth(token="last")
