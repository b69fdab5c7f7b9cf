"""Floods at the transport: a WebSocket peer that sends pings and never reads the pongs, a request
head that never ends, a request body trickled forever. Each is cut off in bounded memory and
time, before and after authentication, and everyone else stays served meanwhile.

Memory is the service process's own figure: the kernel's high-water mark of its resident size
(VmHWM, reset before each flood) against its resident size when the flood began, so a transient
spike counts as much as what is still held at the end."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from pathlib import Path

import httpx

from tasksync.client import SyncClient
from tasksync.protocol import TaskUpdate
from tests.support.events import payload
from tests.support.jwt_tokens import JwksServer, claims, hs256, jwt_env
from tests.support.metrics import value
from tests.support.raw_ws import PING, RawWebSocket, frame
from tests.support.servers import ServiceProcess
from tests.support.waiting import eventually

MIB = 1 << 20
# What one flood may add to the service's resident memory. Without backpressure a ping flood
# added about 250 MiB in 10 s, and four endless headers about 300 MiB.
RSS_GROWTH_LIMIT = 30 * MIB
# Every flood is bounded in bytes and in time, and stops earlier when the server drops it.
PING_FLOOD_BYTES = 256 * MIB
HEAD_FLOOD_BYTES = 64 * MIB
FLOOD_SECONDS = 10.0
# The service's send timeout in these tests: how long a peer may read nothing before it is cut off.
SEND_TIMEOUT = 2
BODY_TIMEOUT = 1
API_KEY = "backend"


class PeakMemory:
    """The growth of a process's resident memory over a `with` block, at its peak."""

    def __init__(self, pid: int) -> None:
        self.status = Path(f"/proc/{pid}/status")
        self.clear_refs = Path(f"/proc/{pid}/clear_refs")
        self.start = 0

    def _kib(self, field: str) -> int:
        for line in self.status.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise AssertionError(f"{field} missing from {self.status}")

    def __enter__(self) -> PeakMemory:
        self.clear_refs.write_text("5")  # resets VmHWM to the current resident size
        self.start = self._kib("VmRSS") * 1024
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    @property
    def growth(self) -> int:
        return self._kib("VmHWM") * 1024 - self.start


def _pid(service: ServiceProcess) -> int:
    assert service.process is not None
    return service.process.pid


async def _served_meanwhile(service: ServiceProcess, *, user_id: str | None = None, token: str | None = None) -> None:
    """A fresh client connects and receives an event published while it is connected."""
    async with SyncClient(service.ws, user_id=user_id, token=token) as canary:
        marker = f"alive-{time.monotonic_ns()}"
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.post(
                service.http + "/v1/events",
                json=payload(user_id or "canary", title=marker),
                headers={"authorization": f"Bearer {API_KEY}"},
            )
            assert response.status_code == 202, response.text
        async with asyncio.timeout(10):
            while not (isinstance(got := await canary.receive(), TaskUpdate) and got.task["title"] == marker):
                pass


# -- ping floods -----------------------------------------------------------------------------


async def _ping_flood(ws: RawWebSocket) -> str:
    """Send pings with the largest payload a ping may carry and read nothing, until
    PING_FLOOD_BYTES are sent, FLOOD_SECONDS pass or the server drops the connection."""
    # A small receive buffer: the pongs back up into the server after kilobytes, not the
    # megabytes loopback buffers absorb. (asyncio's reader also stops reading at 128 KiB.)
    ws.writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    chunk = frame(PING, b"p" * 125) * 512
    sent = 0
    try:
        async with asyncio.timeout(FLOOD_SECONDS):
            while sent < PING_FLOOD_BYTES:
                ws.writer.write(chunk)
                await ws.writer.drain()
                sent += len(chunk)
    except TimeoutError:
        return f"time up after {sent / MIB:.0f} MiB"
    except ConnectionError:
        return f"dropped by the server after {sent / MIB:.0f} MiB"
    return f"sent all {sent / MIB:.0f} MiB"


async def _dropped_by_server(ws: RawWebSocket) -> bool:
    """Read what the server had sent until it ends the connection."""
    try:
        while await ws.reader.read(1 << 16):
            pass
    except ConnectionError:
        pass
    return True


async def _flood_pings(service: ServiceProcess, flooder: RawWebSocket, report, scenario: str, **canary) -> None:
    with PeakMemory(_pid(service)) as memory:
        flood, _ = await asyncio.gather(_ping_flood(flooder), _served_meanwhile(service, **canary))
    growth = memory.growth
    assert growth < RSS_GROWTH_LIMIT, f"the service grew by {growth / MIB:.0f} MiB ({flood})"
    # The peer never reads again: the server lets go of it, and of its buffer, by itself.
    async with asyncio.timeout(SEND_TIMEOUT * 3 + 10):
        assert await _dropped_by_server(flooder)
    await eventually(
        lambda: value(service, "tasksync_transport_cutoffs_total", reason="write_stalled") == 1,
        what="the non-reading peer counted as cut off",
    )
    await flooder.close()
    report.record(
        scenario,
        **{
            "load held": "one canary client served during the flood",
            "inputs tried": f"ping flood from one socket that never reads: {flood}",
            "events lost": 0,
            "notes": f"service memory growth at peak {growth / MIB:.1f} MiB (limit {RSS_GROWTH_LIMIT // MIB}); "
            "flooder aborted once its writes stalled",
        },
    )


async def test_a_ping_flood_before_authentication_is_held_back_and_cut_off(start_service, report):
    with JwksServer([]) as jwks:
        service = start_service(
            "--auth", "jwt",
            # The whole flood happens in the unauthenticated window, waiting for an auth frame.
            "--auth-message-timeout", "60",
            "--send-timeout", str(SEND_TIMEOUT),
            env=jwt_env(jwks, TASKSYNC_API_KEYS=API_KEY),
        )
        flooder = await RawWebSocket.open(service.port, "/ws")
        assert flooder.status == 101
        await _flood_pings(service, flooder, report, "ping flood before authentication", token=hs256(claims("canary")))
    assert value(service, "tasksync_connections_opened_total", kind="new") == 1  # the canary only


async def test_a_ping_flood_after_authentication_is_held_back_and_cut_off(start_service, report):
    service = start_service("--dev", "--send-timeout", str(SEND_TIMEOUT))
    flooder = await RawWebSocket.open(service.port, "/ws?user_id=flooder")
    assert flooder.status == 101
    await eventually(lambda: value(service, "tasksync_connections_active") == 1, what="the flooder admitted")
    await _flood_pings(service, flooder, report, "ping flood after authentication", user_id="canary")
    await eventually(lambda: value(service, "tasksync_connections_active") == 0, what="every connection released")


# -- endless request heads -------------------------------------------------------------------


async def _endless_header(port: int) -> str:
    """One header line that never ends, until HEAD_FLOOD_BYTES are sent, FLOOD_SECONDS pass or
    the server ends the connection; how it ended, and the status line if one was answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Flood: ")
    chunk = b"a" * (1 << 16)
    sent = 0
    ended = "closed"
    try:
        async with asyncio.timeout(FLOOD_SECONDS):
            while sent < HEAD_FLOOD_BYTES:
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
        ended = f"sent all {sent / MIB:.0f} MiB"
    except TimeoutError:
        ended = f"time up after {sent / MIB:.0f} MiB"
    except ConnectionError:
        pass
    answer = b""
    with contextlib.suppress(ConnectionError, TimeoutError):
        answer = await asyncio.wait_for(reader.read(), timeout=5)
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    status_line = answer.split(b"\r\n", 1)[0].decode()
    return f"{ended}: {status_line}" if answer else ended


async def test_endless_request_heads_are_refused_431_in_bounded_memory(start_service, report):
    service = start_service("--dev")
    with PeakMemory(_pid(service)) as memory:
        outcomes = await asyncio.gather(*(_endless_header(service.port) for _ in range(4)))
    growth = memory.growth
    # The server ended each one: the 431 itself may be lost to the reset of a connection closed
    # with the flood still arriving, so "closed" without a status line is an answer too.
    assert growth < RSS_GROWTH_LIMIT, f"the service grew by {growth / MIB:.0f} MiB ({outcomes})"
    assert all(o in ("closed", "closed: HTTP/1.1 431 Request Header Fields Too Large") for o in outcomes), outcomes
    assert value(service, "tasksync_handshakes_refused_total", reason="head_too_large") == 4
    # Heads within the cap still pass, on every route: a token-sized header, and a WebSocket.
    async with httpx.AsyncClient() as http:
        response = await http.get(service.http + "/health", headers={"x-token": "t" * 8000})
    assert response.status_code == 200
    await _served_meanwhile(service, user_id="canary")
    report.record(
        "endless request heads",
        **{
            "inputs tried": "4 connections, one endless header line each",
            "notes": f"outcomes {sorted(set(outcomes))}; service memory growth at peak {growth / MIB:.1f} MiB "
            f"(limit {RSS_GROWTH_LIMIT // MIB})",
        },
    )


# -- trickled bodies -------------------------------------------------------------------------


async def _trickled_body(port: int, method: str, path: str) -> tuple[float | None, bytes]:
    """Announce a 1000-byte body and send it at 2 bytes a second; the seconds until the server
    closed the connection (None: still open after FLOOD_SECONDS) and what it answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: 1000\r\nAuthorization: Bearer {API_KEY}\r\n\r\n{{".encode()
    )
    await writer.drain()
    started = time.monotonic()

    async def trickle() -> None:
        with contextlib.suppress(ConnectionError):
            while True:
                await asyncio.sleep(0.5)  # the behaviour under test: a body that barely moves
                writer.write(b"  ")
                await writer.drain()

    trickling = asyncio.create_task(trickle())
    answer = bytearray()
    closed_after: float | None = None
    try:
        async with asyncio.timeout(FLOOD_SECONDS):
            while data := await reader.read(1 << 16):
                answer += data
            closed_after = time.monotonic() - started
    except TimeoutError:
        pass
    except ConnectionError:
        closed_after = time.monotonic() - started
    finally:
        trickling.cancel()
        writer.close()
    return closed_after, bytes(answer)


async def test_trickled_bodies_are_cut_off_at_the_body_deadline(start_service, report):
    # The deadline through the environment: a version without the setting starts all the same.
    service = start_service("--dev", env={"TASKSYNC_BODY_TIMEOUT": str(BODY_TIMEOUT)})
    routes = {"/health": "GET", "/v1/events": "POST", "/dapr/task-events": "POST"}
    results = await asyncio.gather(*(_trickled_body(service.port, method, path) for path, method in routes.items()))
    outcomes = {
        path: (closed, answer.split(b"\r\n", 1)[0].decode())
        for path, (closed, answer) in zip(routes, results, strict=True)
    }
    for path, (closed, _) in outcomes.items():
        assert closed is not None and closed < BODY_TIMEOUT + 5, f"{path}: {outcomes}"
    # /health answers without reading a body; the ingest routes wait for theirs and get 408.
    assert outcomes["/health"][1] == "HTTP/1.1 200 OK", outcomes
    assert outcomes["/v1/events"][1] == outcomes["/dapr/task-events"][1] == "HTTP/1.1 408 Request Timeout", outcomes
    assert value(service, "tasksync_transport_cutoffs_total", reason="body_timeout") == 3
    # A body sent at an ordinary pace is still taken.
    async with httpx.AsyncClient() as http:
        response = await http.post(service.http + "/v1/events", json=payload("someone"))
    assert response.status_code == 202
    report.record(
        "trickled request bodies",
        **{
            "inputs tried": "a body at 2 bytes/s on " + ", ".join(routes),
            "notes": "; ".join(
                f"{path}: {status}, closed after {closed:.1f}s" for path, (closed, status) in outcomes.items()
            )
            + f" (body deadline {BODY_TIMEOUT}s)",
        },
    )
