"""Slow and stalled consumers are cut off without delaying anyone else."""

from __future__ import annotations

import asyncio
import socket

import httpx
import msgspec
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.support.metrics import value
from tests.support.waiting import eventually

FAST_USERS = 8
ROUNDS = 40
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


async def _fast_reader(url: str, user: str, expected: int) -> list[int]:
    """Read `expected` task updates; their rounds, in the order they came."""
    async with connect(f"{url}?user_id={user}", max_size=None) as ws:
        rounds: list[int] = []
        while len(rounds) < expected:
            frame = msgspec.json.decode(await ws.recv())
            if frame["type"] == "task_update":
                rounds.append(frame["task"]["round"])
        return rounds


async def _publish_rounds(http: httpx.AsyncClient, base: str, heavy_user: str) -> None:
    for round_ in range(ROUNDS):
        small = [
            {"event": "task.updated", "user_id": f"fast-{n}", "task": {"id": n, "round": round_}}
            for n in range(FAST_USERS)
        ]
        heavy = [{"event": "task.updated", "user_id": heavy_user, "task": {"blob": BIG}} for _ in range(8)]
        for batch in (small, heavy):
            response = await http.post(base + "/v1/events", json=batch)
            assert response.status_code == 202


async def test_a_slow_consumer_is_closed_1013_while_every_other_user_gets_every_event(start_service):
    """How much a slow consumer delays the others is a latency, for the benchmarks (bench/),
    not for a test on a shared machine: this asserts what must hold however loaded it is. A hub
    that waited on the slow socket would hold up every other user's stream, and the readers
    below would not finish."""
    service = start_service("--dev", "--outbox-size", "50")
    closed: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()
    slow = asyncio.create_task(_slow_reader(service, closed))
    readers = [asyncio.create_task(_fast_reader(service.ws, f"fast-{n}", ROUNDS)) for n in range(FAST_USERS)]
    await eventually(lambda: value(service, "tasksync_connections_active") == FAST_USERS + 1, what="readers connected")
    async with httpx.AsyncClient(timeout=30) as http:
        await _publish_rounds(http, service.http, "slowpoke")
    received = await asyncio.wait_for(asyncio.gather(*readers), timeout=60)
    assert all(rounds == list(range(ROUNDS)) for rounds in received)
    code, reason = await asyncio.wait_for(closed, timeout=60)
    await slow
    assert code == 1013 and "slow consumer" in reason
    assert value(service, "tasksync_connections_closed_total", reason="slow_consumer") == 1


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
