"""Handshake abuse: sockets that hold a slot without authenticating, resumes that make the
server replay its history over and over, and handshake parameters and headers crafted to crash
the handshake or confuse who the user is."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import statistics
import time

import httpx
import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tasksync.limits import Limits, LimitsFile, encode_limits_file
from tasksync.protocol import Auth
from tests.support.events import payload
from tests.support.jwt_tokens import AUDIENCE, ISSUER, SECRET, claims, hs256
from tests.support.metrics import value
from tests.support.raw_ws import CLOSE, TEXT, RawWebSocket
from tests.support.waiting import eventually

LEAKS = ("Traceback", 'File "', "site-packages")


def write_limits(path, **limits) -> str:
    path.write_bytes(encode_limits_file(LimitsFile(generation=1, limits=Limits(**limits))))
    return str(path)


def readiness(service) -> httpx.Response:
    return httpx.get(service.http + "/health/ready")


async def close_of(ws: RawWebSocket) -> tuple[int, str]:
    """Read frames until the server's close frame: its code and reason (text frames before it,
    such as `connected`, mean the handshake was not refused)."""
    async with asyncio.timeout(10):
        while (received := await ws.read_frame()) is not None:
            opcode, data = received
            assert opcode != TEXT, f"handshake not refused: {data[:200]!r}"
            if opcode == CLOSE:
                return int.from_bytes(data[:2], "big"), data[2:].decode()
    return 1006, ""


# -- sockets waiting for their auth frame ----------------------------------------------------


async def test_sockets_waiting_for_their_auth_frame_count_against_the_process_limit(start_service, tmp_path):
    limits = write_limits(tmp_path / "limits.yaml", max_connections_per_user=5, max_connections_per_process=5)
    env = {"TASKSYNC_JWT_SECRET": SECRET, "TASKSYNC_JWT_AUDIENCE": AUDIENCE, "TASKSYNC_JWT_ISSUER": ISSUER}
    service = start_service("--auth", "jwt", "--auth-message-timeout", "60", "--limits-file", limits, env=env)
    # Twenty sockets that each send no token and so wait to authenticate in-band.
    sockets: list[ClientConnection] = []
    for _ in range(20):
        sockets.append(await connect(service.ws, subprotocols=["tasksync.v1"]))  # type: ignore[list-item]
    try:
        waiting, refused = sockets[:5], sockets[5:]
        for ws in refused:
            async with asyncio.timeout(10):
                await ws.wait_closed()
            assert (ws.close_code, ws.close_reason) == (1013, "server full: try again later")
        assert all(ws.close_code is None for ws in waiting)
        assert value(service, "tasksync_handshakes_refused_total", reason="process_limit") == 15
        response = readiness(service)
        assert response.status_code == 503 and response.json()["full"] is True

        # The five that held their slot authenticate and are served.
        for index, ws in enumerate(waiting):
            await ws.send(msgspec.json.encode(Auth(token=hs256(claims(f"user-{index}")))).decode())
            assert msgspec.json.decode(await ws.recv())["user_id"] == f"user-{index}"
    finally:
        for ws in sockets:
            await ws.close()
    # A slot is freed when its socket ends, authenticated or not.
    await eventually(lambda: readiness(service).status_code == 200, what="readiness once the sockets closed")


async def test_a_socket_that_never_authenticates_frees_its_slot(start_service, tmp_path):
    limits = write_limits(tmp_path / "limits.yaml", max_connections_per_user=1, max_connections_per_process=1)
    env = {"TASKSYNC_JWT_SECRET": SECRET, "TASKSYNC_JWT_AUDIENCE": AUDIENCE, "TASKSYNC_JWT_ISSUER": ISSUER}
    service = start_service("--auth", "jwt", "--auth-message-timeout", "1", "--limits-file", limits, env=env)
    async with connect(service.ws, subprotocols=["tasksync.v1"]) as silent:
        assert readiness(service).json()["full"] is True
        await silent.wait_closed()
        assert silent.close_code == 4001
    await eventually(lambda: readiness(service).status_code == 200, what="the slot freed after the auth timeout")
    async with connect(service.ws, subprotocols=["tasksync.v1", f"bearer.{hs256(claims('late'))}"]) as ws:
        assert msgspec.json.decode(await ws.recv())["user_id"] == "late"


# -- resume amplification --------------------------------------------------------------------


class Abuser:
    """One socket of the finding's attack: nine `resume since=0` frames a second, reading
    everything the server replays, reconnecting whenever it is closed."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.replayed = 0
        self.cut_off = 0  # closes for replaying too much

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            async with connect(self.url, max_size=None) as ws:
                try:
                    epoch = msgspec.json.decode(await ws.recv())["epoch"]
                except ConnectionClosed:
                    # Refused at the handshake: the user's connection limit, while the socket
                    # just closed is still being removed. Connect again.
                    continue
                reader = asyncio.create_task(self._count(ws))
                resume = msgspec.json.encode({"type": "resume", "since": 0, "epoch": epoch}).decode()
                try:
                    while not stop.is_set() and not reader.done():
                        await ws.send(resume)
                        # The attack's pace, not a wait for anything.
                        await asyncio.sleep(1 / 9)
                except ConnectionClosed:
                    pass
                reader.cancel()
            if ws.close_code == 4029 and "replayed" in ws.close_reason:
                self.cut_off += 1

    async def _count(self, ws: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in ws:
                if b'"task_update"' in (message if isinstance(message, bytes) else message.encode()):
                    self.replayed += 1


async def handshake_seconds(url: str) -> float:
    started = time.monotonic()
    async with connect(url) as ws:
        assert msgspec.json.decode(await ws.recv())["type"] == "connected"
    return time.monotonic() - started


async def test_resumes_are_charged_by_what_they_replay(dev_service, report):
    limits = Limits()
    async with httpx.AsyncClient() as http:
        events = [payload("hoarder", title=f"event {n}") for n in range(1000)]
        assert (await http.post(dev_service.http + "/v1/events", json=events)).status_code == 202
    before = [await handshake_seconds(f"{dev_service.ws}?user_id=bystander") for _ in range(5)]

    abusers = [Abuser(f"{dev_service.ws}?user_id=hoarder") for _ in range(20)]
    stop = asyncio.Event()
    started = time.monotonic()
    attack = [asyncio.create_task(abuser.run(stop)) for abuser in abusers]
    during: list[float] = []

    async def under_attack() -> bool:
        # Another user keeps connecting while the attack goes on, until every abusive socket
        # has been cut off at least once.
        during.append(await handshake_seconds(f"{dev_service.ws}?user_id=bystander"))
        if any(task.done() for task in attack):
            await asyncio.gather(*attack)  # an abuser that crashed says why
        return len(during) >= 5 and all(abuser.cut_off for abuser in abusers)

    try:
        await eventually(under_attack, timeout=60, interval=0.2, what="every abusive socket cut off")
    finally:
        stop.set()
        await asyncio.gather(*attack, return_exceptions=True)
    elapsed = time.monotonic() - started

    # What the budget allows over the attack: the burst, then the refill rate.
    budget = limits.replay_burst_per_user + limits.replay_events_per_second_per_user * elapsed
    replayed_by_server = value(dev_service, "tasksync_events_replayed_total")
    received = sum(abuser.replayed for abuser in abusers)
    assert replayed_by_server <= budget, (replayed_by_server, budget)
    assert received <= budget, (received, budget)
    cut_off = sum(abuser.cut_off for abuser in abusers)
    assert value(dev_service, "tasksync_rate_limited_total", direction="replay") >= cut_off >= len(abusers)
    # A liveness guard, not a performance figure: the bystander was served throughout.
    assert max(during) < 10, during
    report.record(
        "resume amplification (20 sockets, 9 resume since=0 a second, 1,000-event history)",
        **{
            "load held": f"{len(abusers)} abusive sockets for {elapsed:.1f}s",
            "inputs tried": f"{received} events replayed to the abuser (budget {budget:.0f})",
            "notes": f"bystander handshake median {statistics.median(before) * 1000:.0f} ms before, "
            f"{statistics.median(during) * 1000:.0f} ms during the attack (max {max(during) * 1000:.0f} ms)",
        },
    )


# -- malformed handshake parameters ----------------------------------------------------------


async def test_non_ascii_digits_and_huge_numbers_are_refused_as_a_malformed_handshake(dev_service):
    malformed = {
        "since=%C2%B2&epoch=e": "since",  # superscript two: str.isdigit() says yes, int() says no
        "since=%D9%A1%D9%A2&epoch=e": "since",  # Arabic-Indic twelve: int() would take it
        "since=-1&epoch=e": "since",
        "since=" + "9" * 19 + "&epoch=e": "since",
        "reconnect=1&attempts=%E2%91%A0": "attempts",  # circled one
        "reconnect=1&attempts=%D9%A1": "attempts",
        "reconnect=1&attempts=" + "9" * 5000: "attempts",  # past int()'s digit limit
        "reconnect=1&attempts=many": "attempts",
    }
    for query, parameter in malformed.items():
        ws = await RawWebSocket.open(dev_service.port, f"/ws?user_id=u&{query}")
        try:
            assert ws.status == 101, (query, ws.status)
            code, reason = await close_of(ws)
        finally:
            await ws.close()
        assert code == 1008 and parameter in reason, (query, code, reason)
    for label, parameter in (("bad_resume", "since"), ("bad_attempts", "attempts")):
        refused = value(dev_service, "tasksync_handshakes_refused_total", reason=label)
        assert refused == list(malformed.values()).count(parameter), label
    # Well-formed values still pass.
    async with connect(f"{dev_service.ws}?user_id=u&reconnect=1&attempts=3&since=0&epoch=e") as ws:
        assert msgspec.json.decode(await ws.recv())["type"] == "connected"
    assert not any(leak in dev_service.log() for leak in LEAKS)


async def test_a_reported_attempts_count_is_clamped(dev_service):
    async with connect(f"{dev_service.ws}?user_id=u&reconnect=1&attempts=1000") as ws:
        await ws.recv()
    # The documented ceiling of what one handshake may report.
    assert value(dev_service, "tasksync_reconnect_failed_attempts_total") == 100


# -- identity headers ------------------------------------------------------------------------


def header_service(start_service):
    env = {"TASKSYNC_HEADER_AUTH_TRUSTED_PROXIES": "127.0.0.0/8", "TASKSYNC_API_KEYS": "backend"}
    return start_service("--auth", "header", env=env)


async def test_a_repeated_user_header_is_refused_not_joined(start_service):
    service = header_service(start_service)
    # Two spellings of one header name: the request carries x-forwarded-user twice.
    ws = await RawWebSocket.open(service.port, "/ws", {"X-Forwarded-User": "bob", "x-forwarded-user": "alice"})
    try:
        assert ws.status == 101
        code, reason = await close_of(ws)
    finally:
        await ws.close()
    assert code == 4001 and "more than once" in reason, (code, reason)
    assert value(service, "tasksync_auth_failures_total", reason="repeated_user_header") == 1


async def test_a_utf8_user_id_is_the_user_events_are_published_for(start_service):
    service = header_service(start_service)
    ws = await RawWebSocket.open(service.port, "/ws", {"X-Forwarded-User": "zoë"})  # sent as UTF-8
    try:
        assert ws.status == 101
        opcode, data = await ws.read_frame()
        assert opcode == TEXT and msgspec.json.decode(data)["user_id"] == "zoë"
        async with httpx.AsyncClient() as http:
            published = await http.post(
                service.http + "/v1/events",
                json=payload("zoë", title="for zoë"),
                headers={"Authorization": "Bearer backend"},
            )
            assert published.status_code == 202
        async with asyncio.timeout(10):
            while (frame := msgspec.json.decode((await ws.read_frame())[1]))["type"] != "task_update":
                pass
        assert frame["task"]["title"] == "for zoë"
    finally:
        await ws.close()


async def test_a_header_that_is_not_utf8_is_refused_as_malformed(start_service):
    service = header_service(start_service)
    # What a proxy writing Latin-1 would send for "zoë": one byte that UTF-8 cannot decode.
    reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
    key = base64.b64encode(os.urandom(16))
    writer.write(
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\nX-Forwarded-User: zo\xeb\r\n\r\n"
    )
    response = await reader.readuntil(b"\r\n\r\n")
    ws = RawWebSocket(reader, writer, int(response.split()[1]))
    try:
        assert ws.status == 101
        code, reason = await close_of(ws)
    finally:
        await ws.close()
    assert code == 1008 and "UTF-8" in reason, (code, reason)
    assert value(service, "tasksync_handshakes_refused_total", reason="bad_header") == 1
