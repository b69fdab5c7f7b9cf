"""The embedded broker frees an idle user's history once it expires, with nothing else going on."""

from __future__ import annotations

import httpx

from tests.support.events import payload
from tests.support.metrics import value
from tests.support.waiting import eventually

USERS = 10_000
BATCH = 1_000


async def test_ten_thousand_idle_users_history_is_freed_after_its_time_to_live(start_service):
    service = start_service("--dev", "--history-ttl", "3")
    async with httpx.AsyncClient(base_url=service.http, timeout=30) as http:
        for first in range(0, USERS, BATCH):
            batch = [payload(f"idle-{n}") for n in range(first, first + BATCH)]
            assert (await http.post("/v1/events", json=batch)).status_code == 202
    assert value(service, "tasksync_history_events") == USERS
    # No publish, no connection, no resume from here on: only the broker's own sweep runs.
    await eventually(
        lambda: value(service, "tasksync_history_events") == 0, timeout=20, what="expired history to be freed"
    )
