"""Slow and stalled consumers are cut off without delaying anyone else."""

from __future__ import annotations

import asyncio
import socket
import statistics
import time

import httpx
import msgspec
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.support.metrics import value
from tests.support.waiting import eventually

FAST_USERS = 8
ROUNDS = 40
PAIRS = 5
# Big frames fill the slow reader's buffers quickly. The slow clients turn permessage-deflate
# off, or these repetitive frames would shrink to a few bytes on the wire.
BIG = "x" * 32_000


def small_buffer_socket(port: int) -> socket.socket:
    """A client socket with a tiny receive buffer, so a slow reader pushes back on the server
    after kilobytes instead of the megabytes loopback buffers would otherwise absorb."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    return sock


async def _fast_reader(url: str, user: str, latencies: list[float], expected: int) -> None:
    async with connect(f"{url}?user_id={user}", max_size=None) as ws:
        got = 0
        while got < expected:
            frame = msgspec.json.decode(await ws.recv())
            if frame["type"] == "task_update":
                # The publisher's own clock reading, not the frame's millisecond timestamp: at a
                # p99 of a few milliseconds, a millisecond of rounding would be most of the signal.
                latencies.append(time.time() - frame["task"]["sent"])
                got += 1


async def _publish_rounds(http: httpx.AsyncClient, base: str, heavy_user: str) -> None:
    for _ in range(ROUNDS):
        small = [
            {"event": "task.updated", "user_id": f"fast-{n}", "task": {"id": n, "sent": time.time()}}
            for n in range(FAST_USERS)
        ]
        heavy = [{"event": "task.updated", "user_id": heavy_user, "task": {"blob": BIG}} for _ in range(8)]
        for batch in (small, heavy):
            response = await http.post(base + "/v1/events", json=batch)
            assert response.status_code == 202
        await asyncio.sleep(0.01)  # a steady offered rate, not a burst: this is the load shape


async def _run_phase(service, heavy_user: str) -> list[float]:
    """Measure the fast users' latencies while `heavy_user` is sent big frames: the same load in
    both phases, so the only difference is whether the heavy user reads fast or slowly."""
    latencies: list[float] = []
    readers = [
        asyncio.create_task(_fast_reader(service.ws, f"fast-{n}", latencies, ROUNDS)) for n in range(FAST_USERS)
    ]
    await eventually(lambda: value(service, "tasksync_connections_active") >= FAST_USERS + 1, what="readers connected")
    async with httpx.AsyncClient(timeout=30) as http:
        await _publish_rounds(http, service.http, heavy_user)
    await asyncio.wait_for(asyncio.gather(*readers), timeout=60)
    return latencies


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98]


async def test_slow_consumer_is_closed_1013_and_others_p99_stays_within_1_5x(start_service):
    service = start_service("--dev", "--outbox-size", "50")
    ratios: list[float] = []
    # Phases alternate, so load on this shared machine falls on both sides of each comparison,
    # and each pair is compared on its own: a burst of other work during one phase moves one
    # pair's ratio, while a slow consumer that delayed the others would move every pair's.
    # The heavy user's reader runs in this process, as the fast readers do. In a process of its
    # own, the slow reader's tiny-window TCP traffic on these same two cores raised every
    # reader's p99 1.2-2.2x, with the server code from before the hot-path changes as with it:
    # that measured the machine, not the server.
    for _ in range(PAIRS):
        keen = asyncio.create_task(_keen_reader(service.ws))
        baseline = await _run_phase(service, "keen")
        keen.cancel()
        await eventually(lambda: value(service, "tasksync_connections_active") == 0, what="phase cleanup")

        closed: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()
        slow = asyncio.create_task(_slow_reader(service, closed))
        with_slow = await _run_phase(service, "slowpoke")
        code, reason = await asyncio.wait_for(closed, timeout=60)
        await slow
        assert code == 1013 and "slow consumer" in reason
        await eventually(lambda: value(service, "tasksync_connections_active") == 0, what="phase cleanup")
        ratios.append(p99(with_slow) / p99(baseline))

    print("p99 with a slow consumer / without, per pair:", " ".join(f"{ratio:.2f}" for ratio in ratios))
    assert value(service, "tasksync_connections_closed_total", reason="slow_consumer") == PAIRS
    assert statistics.median(ratios) <= 1.5


async def _keen_reader(url: str) -> None:
    async with connect(f"{url}?user_id=keen", max_size=None, compression=None) as ws:
        async for _ in ws:
            pass


async def _slow_reader(service, closed: asyncio.Future[tuple[int, str]]) -> None:
    sock = small_buffer_socket(service.port)
    async with connect(f"{service.ws}?user_id=slowpoke", sock=sock, max_size=None, max_queue=1, compression=None) as ws:
        try:
            while True:
                await ws.recv()
                await asyncio.sleep(0.05)  # the behaviour under test: a reader that keeps up badly
        except ConnectionClosed:
            closed.set_result((ws.close_code, ws.close_reason))


async def test_a_reader_that_stops_reading_is_aborted_after_send_timeout(start_service):
    service = start_service("--dev", "--outbox-size", "50", "--send-timeout", "1")
    sock = small_buffer_socket(service.port)
    async with connect(f"{service.ws}?user_id=stalled", sock=sock, max_size=None, max_queue=1, compression=None) as ws:
        await ws.recv()  # connected; from here on this client reads nothing
        async with httpx.AsyncClient(timeout=30) as http:
            for _ in range(60):
                batch = [{"event": "task.updated", "user_id": "stalled", "task": {"blob": BIG}} for _ in range(10)]
                await http.post(service.http + "/v1/events", json=batch)
        await eventually(
            lambda: value(service, "tasksync_connections_closed_total", reason="stalled") == 1,
            timeout=20, what="the stalled socket aborted",
        )
        assert value(service, "tasksync_connections_active") == 0
    # The server still serves everyone else.
    async with connect(f"{service.ws}?user_id=next") as other:
        assert msgspec.json.decode(await other.recv())["type"] == "connected"
