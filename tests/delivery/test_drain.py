"""Graceful drain on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import time

import httpx
from websockets.asyncio.client import connect

from tasksync.client import SyncClient
from tests.support.waiting import eventually

SOCKETS = 6
WINDOW = 1.5


async def test_sigterm_unreadies_refuses_new_sockets_spreads_1012_closes_and_exits_in_grace(start_service):
    service = start_service("--dev", "--drain-window", str(WINDOW), "--drain-grace", "6")
    clients = [SyncClient(service.ws, user_id=f"user-{n}") for n in range(SOCKETS)]
    for client in clients:
        await client.connect()

    async def closed_at(client: SyncClient) -> tuple[float, int | None]:
        code, _ = await client.wait_closed()
        return time.monotonic(), code

    waiters = [asyncio.create_task(closed_at(c)) for c in clients]
    started = time.monotonic()
    service.process.send_signal(signal.SIGTERM)

    ready = await eventually(
        lambda: httpx.get(service.http + "/health/ready").status_code == 503, timeout=2, what="unready"
    )
    assert ready
    async with connect(f"{service.ws}?user_id=late") as late:
        await late.wait_closed()
        assert late.close_code == 1012

    results = await asyncio.wait_for(asyncio.gather(*waiters), timeout=10)
    assert {code for _, code in results} == {1012}
    offsets = sorted(at - started for at, _ in results)
    # Spread, not all at once: the closes span most of the window.
    assert offsets[-1] - offsets[0] >= WINDOW * 0.5, offsets
    exit_code = await asyncio.to_thread(service.process.wait, 10)
    assert exit_code == 0
    assert time.monotonic() - started < 6 + 5  # drain grace plus uvicorn's own shutdown bound
