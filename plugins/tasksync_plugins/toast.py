"""`toast`: the four toasts of the original client specification, in English. Per-locale text
belongs to other plugins listed before this one in TASKSYNC_NOTIFIERS (the first answer wins).

Titles carry no emoji: the client shows each event's icon (✅ 🔄 ✔️ 🗑️) beside whatever text
the server sends, so an emoji here would appear twice."""

from __future__ import annotations

from tasksync import hookimpl
from tasksync.events import Notification, TaskEvent
from tasksync.plugins import PluginContext

TOASTS = {
    "task.created": ("Task created", "success"),
    "task.updated": ("Task updated", "info"),
    "task.completed": ("Task completed", "success"),
    "task.deleted": ("Task deleted", "warning"),
}


@hookimpl
def tasksync_notification(ctx: PluginContext, event: TaskEvent) -> Notification:
    title, kind = TOASTS[event.event]
    name = event.task.get("title")
    return Notification(title=title, body=name if isinstance(name, str) else "", kind=kind)
