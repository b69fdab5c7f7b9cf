"""`log`: one structured JSON line per event whose user has no live connection."""

from __future__ import annotations

import logging

import msgspec

from tasksync import hookimpl
from tasksync.events import TaskEvent
from tasksync.plugins import PluginContext

log = logging.getLogger("tasksync.offline")


@hookimpl
def tasksync_offline_event(ctx: PluginContext, event: TaskEvent) -> None:
    line = {
        "msg": "event for offline user",
        "user_id": event.user_id,
        "event": event.event,
        "event_id": event.id,
        "task_id": event.task.get("id"),
        "occurred_at": event.occurred_at,
    }
    log.info(msgspec.json.encode(line).decode())
    ctx.metrics.notifications.labels("log", "logged").inc()
