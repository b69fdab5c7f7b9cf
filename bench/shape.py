"""What every workload agrees on: which user each socket belongs to, and what an event carries.

The servers under test, the load generator and the orchestrator all import this module, so the
peers receive the same users and send the same bytes as TaskSync.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal

Mode = Literal["routed", "wide"]

# In the wide case every socket belongs to this one user, so one event reaches every socket. That
# is the only way TaskSync, which routes by user, can address all of them with a single event.
WIDE_USER = "everyone"

# Each event's task carries the sender's CLOCK_MONOTONIC (system-wide on Linux) as a fixed-width
# string: the load generator finds it with one bytes.find instead of parsing JSON, whatever
# envelope the server wraps around the task (TaskSync's task_update, Centrifugo's push).
SENT_MARK = b'"sent_ns":"'
SENT_WIDTH = 20

# The peers send the same timestamp in every frame: formatting the time is not what is measured.
TIMESTAMP = "2025-01-01T00:00:00.000Z"


def user_of(mode: Mode, index: int) -> str:
    """The user of socket `index`: two sockets per user when routed (two tabs), one user when wide."""
    return WIDE_USER if mode == "wide" else f"u{index // 2}"


def users(mode: Mode, sockets: int) -> list[str]:
    return [WIDE_USER] if mode == "wide" else [f"u{i}" for i in range((sockets + 1) // 2)]


def stamp() -> str:
    return f"{time.monotonic_ns():0{SENT_WIDTH}d}"


def task(n: int) -> dict[str, Any]:
    return {"id": n, "title": f"Task {n}", "completed": False, "sent_ns": stamp()}


def peer_frame(n: int) -> str:
    """The frame a peer server sends for event `n`: TaskSync's task_update shape, encoded the way
    a Python engineer would (the standard library's json), once per event, compact like
    TaskSync's msgspec output so every server sends the same bytes."""
    return compact_json(
        {
            "type": "task_update",
            "event": "task.updated",
            "task": task(n),
            "timestamp": TIMESTAMP,
            "id": f"e-{n}",
            "seq": n,
            "epoch": "bench",
        }
    )


def compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
