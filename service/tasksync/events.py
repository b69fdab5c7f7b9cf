"""The task event: the one typed value that flows from ingest through the broker to sockets."""

from __future__ import annotations

import time
from typing import Any, Literal, get_args

import msgspec

EventName = Literal["task.created", "task.updated", "task.completed", "task.deleted"]
EVENT_NAMES: frozenset[str] = frozenset(get_args(EventName))


class Notification(msgspec.Struct, frozen=True):
    """The toast a client shows for an event, chosen by the notification hooks."""

    title: str
    body: str
    kind: str = "info"


class TaskEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A validated event for one user's task.

    `occurred_at` is the publisher's time (ISO 8601) when it gave one, else the ingest time.
    `op_id` is the publisher's operation id, passed through untouched: the id of the user action
    that caused the event, by which the client tab that acted recognises its own change.
    `received_ns` is the monotonic ingest instant, kept only in this process to measure
    ingest-to-socket latency.
    """

    id: str
    user_id: str
    event: EventName
    task: dict[str, Any]
    occurred_at: str
    source: str = "http"
    notification: Notification | None = None
    op_id: str | None = None
    received_ns: int = msgspec.field(default_factory=time.monotonic_ns)
