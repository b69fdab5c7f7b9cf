"""Wire protocol v1: the frames on /ws and their codec, with no I/O.

Everything that turns bytes into frames or frames into bytes lives here, so the rules of the
protocol can be tested without a socket (the way the `websockets` library keeps its protocol
core I/O-free). docs/protocol.md is the prose reference for these types.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec

from .events import EventName, Notification, TaskEvent

SUBPROTOCOL = "tasksync.v1"
BEARER_PREFIX = "bearer."

# Close codes (RFC 6455 plus the 4xxx range TaskSync gives its own meaning), the table of
# docs/protocol.md. The web client's `CLOSE_CODES` (clients/web/src/protocol.ts) holds the same
# names and numbers; tests/unit/test_close_codes.py fails when the two tables disagree.
CLOSE_NORMAL = 1000
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_SERVICE_RESTART = 1012
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_UNAUTHENTICATED = 4001
CLOSE_FORBIDDEN = 4003
CLOSE_RATE_LIMITED = 4029

# RFC 6455 allows 123 bytes of UTF-8 in a close reason.
MAX_CLOSE_REASON_BYTES = 123


# --- server to client -----------------------------------------------------------------------


class Connected(msgspec.Struct, tag="connected", tag_field="type", kw_only=True):
    user_id: str
    connection_id: str
    seq: int
    epoch: str
    heartbeat_interval: float
    resumed: bool


class TaskUpdate(msgspec.Struct, tag="task_update", tag_field="type", kw_only=True, omit_defaults=True):
    event: EventName
    task: dict[str, Any]
    timestamp: str
    id: str
    seq: int
    epoch: str
    notification: Notification | None = None
    op_id: str | None = None


class Ping(msgspec.Struct, tag="ping", tag_field="type", kw_only=True):
    timestamp: str


# Why a stream cannot go on from where a client stands: history no longer holds what followed,
# or the broker's offsets restarted (a new epoch).
ResyncReason = Literal["history_gap", "epoch_changed"]


class ResyncRequired(msgspec.Struct, tag="resync_required", tag_field="type", kw_only=True):
    reason: ResyncReason
    seq: int
    epoch: str


class Error(msgspec.Struct, tag="error", tag_field="type", kw_only=True):
    code: Literal["invalid_json", "invalid_frame", "unknown_type"]
    message: str


ServerFrame = Connected | TaskUpdate | Ping | ResyncRequired | Error


# --- client to server -----------------------------------------------------------------------


class Pong(msgspec.Struct, tag="pong", tag_field="type"):
    pass


class Auth(msgspec.Struct, tag="auth", tag_field="type"):
    token: str


class Resume(msgspec.Struct, tag="resume", tag_field="type"):
    since: Annotated[int, msgspec.Meta(ge=0)]
    epoch: str


ClientFrame = Pong | Auth | Resume
CLIENT_FRAME_TYPES = ("pong", "auth", "resume")


class ProtocolError(Exception):
    """A client frame that cannot be understood. The connection stays open; the client
    receives an `error` frame built from this."""

    def __init__(self, code: Literal["invalid_json", "invalid_frame", "unknown_type"], message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def to_frame(self) -> Error:
        return Error(code=self.code, message=self.message)


_encoder = msgspec.json.Encoder()
_client_decoder = msgspec.json.Decoder(ClientFrame)
_generic_decoder = msgspec.json.Decoder()


def encode(frame: ServerFrame) -> str:
    """Encode a server frame as the text of one WebSocket frame."""
    return _encoder.encode(frame).decode()


def encode_task_update(event: TaskEvent, seq: int, epoch: str) -> str:
    """The `task_update` frame for an event at an offset: encoded once, sent to every socket."""
    return encode(
        TaskUpdate(
            event=event.event,
            task=event.task,
            timestamp=event.occurred_at,
            id=event.id,
            seq=seq,
            epoch=epoch,
            notification=event.notification,
            op_id=event.op_id,
        )
    )


def text_frame(text: str) -> bytes:
    """`text` as one unmasked, unfragmented WebSocket text frame (RFC 6455 5.2), as a server
    sends it."""
    payload = text.encode()
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x81, size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x81, 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 127, size)
    return header + payload


def decode_client_frame(text: str | bytes) -> ClientFrame:
    """Decode one client frame, or raise ProtocolError saying what was wrong with it."""
    try:
        return _client_decoder.decode(text)
    # ValidationError subclasses DecodeError: well-formed JSON of the wrong shape comes first.
    except msgspec.ValidationError as exc:
        raise _explain_invalid(text, exc) from exc
    except msgspec.DecodeError as exc:
        raise ProtocolError("invalid_json", f"frame is not valid JSON: {exc}") from exc
    except RecursionError:
        raise ProtocolError("invalid_json", "frame is nested too deeply") from None


def _explain_invalid(text: str | bytes, exc: msgspec.ValidationError) -> ProtocolError:
    # msgspec reports an unknown tag as a validation error; tell the client which type it sent.
    try:
        raw = _generic_decoder.decode(text)
    except msgspec.DecodeError:
        return ProtocolError("invalid_json", "frame is not valid JSON")
    except RecursionError:
        return ProtocolError("invalid_frame", "frame is nested too deeply")
    if not isinstance(raw, dict):
        return ProtocolError("invalid_frame", "frame must be a JSON object with a 'type' field")
    kind = raw.get("type")
    if kind is None:
        return ProtocolError("invalid_frame", "frame has no 'type' field")
    if not isinstance(kind, str) or kind not in CLIENT_FRAME_TYPES:
        shown = kind if isinstance(kind, str) else type(kind).__name__
        return ProtocolError(
            "unknown_type",
            f"unknown client frame type {shown!r}; expected one of {', '.join(CLIENT_FRAME_TYPES)}",
        )
    return ProtocolError("invalid_frame", f"invalid {kind!r} frame: {exc}")


def utc_now_iso() -> str:
    """Current time as ISO 8601 UTC with a Z suffix, the form every timestamp takes."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def close_reason(text: str) -> str:
    """Trim a close reason to what RFC 6455 allows, without splitting a UTF-8 character."""
    raw = text.encode()
    if len(raw) <= MAX_CLOSE_REASON_BYTES:
        return text
    return raw[: MAX_CLOSE_REASON_BYTES - 3].decode(errors="ignore") + "..."
