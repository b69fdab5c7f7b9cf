"""Build what publishers send: event payloads, CloudEvents, Dapr bulk envelopes."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

_task_ids = itertools.count(1)


def payload(user_id: str, event: str = "task.created", **task: Any) -> dict[str, Any]:
    task = {"id": next(_task_ids), "title": "a task", "completed": False, **task}
    return {"event": event, "user_id": user_id, "task": task}


def cloudevent(data: Any, *, event_id: str | None = None) -> dict[str, Any]:
    """A structured CloudEvent as the Dapr sidecar delivers it to a subscriber."""
    return {
        "specversion": "1.0",
        "id": event_id or str(uuid.uuid4()),
        "source": "task-backend",
        "type": "com.dapr.event.sent",
        "datacontenttype": "application/json",
        "topic": "task-events",
        "pubsubname": "pubsub",
        "traceid": "00-00000000000000000000000000000000-0000000000000000-00",
        "data": data,
    }


def bulk(entries: list[Any]) -> dict[str, Any]:
    """Dapr's bulk-subscribe request body: one entry per event, each with an entryId."""
    return {
        "id": str(uuid.uuid4()),
        "type": "com.dapr.event.sent.bulk",
        "pubsubname": "pubsub",
        "topic": "task-events",
        "metadata": {},
        "entries": [
            {
                "entryId": f"entry-{index}",
                "event": event,
                "contentType": "application/cloudevents+json",
                "metadata": {},
            }
            for index, event in enumerate(entries)
        ],
    }
