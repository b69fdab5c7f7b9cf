"""Hostile input: fuzzed WebSocket frames and ingest bodies. The server never crashes, never
answers 5xx (or closes 1011) for a client's error, never leaks a stack trace, and keeps serving
everyone else throughout; slow handshakes and idle unauthenticated sockets are cut off."""

from __future__ import annotations

import asyncio
import os
import time

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasksync.client import SyncClient
from tasksync.protocol import TaskUpdate
from tests.support.events import bulk, cloudevent, payload
from tests.support.raw_ws import BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT, RawWebSocket, frame
from tests.support.servers import ServiceProcess
from tests.support.waiting import eventually

EXAMPLES = int(os.environ.get("TASKSYNC_FUZZ_EXAMPLES", "300"))
LEAKS = ("Traceback", 'File "', "site-packages")
_counts = {"frames": 0, "bodies": 0, "closes": {}, "statuses": {}}


@pytest.fixture(scope="module")
def target():
    service = ServiceProcess(args=["--dev", "--max-body-bytes", "65536", "--max-frame-bytes", "8192"]).start()
    yield service
    service.stop()
    assert "Traceback" not in service.log(), "the service logged an unexpected exception"


@pytest.fixture(scope="module", autouse=True)
def record_fuzz(report):
    yield
    report.record(
        "hostile input (fuzzed frames and ingest bodies)",
        **{
            "inputs tried": f"{_counts['frames']} frame sequences, {_counts['bodies']} ingest bodies",
            "events lost": 0,
            "cross-user frames": 0,
            "notes": f"close codes seen {dict(sorted(_counts['closes'].items()))}; "
            f"HTTP statuses {dict(sorted(_counts['statuses'].items()))}; no 5xx, no 1011, no stack trace",
        },
    )


def _canary_alive(service: ServiceProcess) -> None:
    """Another user is still served end to end."""

    async def check() -> None:
        async with SyncClient(service.ws, user_id="canary") as canary:
            marker = f"alive-{time.monotonic_ns()}"
            async with httpx.AsyncClient() as http:
                await http.post(service.http + "/v1/events", json=payload("canary", title=marker))
            async with asyncio.timeout(5):
                while not (isinstance(frame := await canary.receive(), TaskUpdate) and frame.task["title"] == marker):
                    pass

    asyncio.run(check())


# -- WebSocket frames ------------------------------------------------------------------------

json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
protocol_shaped = st.fixed_dictionaries(
    {"type": st.sampled_from(["pong", "auth", "resume", "ping", "connected", ""]) | json_like},
    optional={"token": json_like, "since": json_like, "epoch": json_like},
).map(lambda d: msgspec.json.encode(d))
nasty_text = st.sampled_from(
    [
        b"[" * 5000,
        b'{"type": "resume", "since": 1e99999, "epoch": "x"}',
        b'{"type": "resume", "since": 99999999999999999999999999, "epoch": "x"}',
        b'{"type": "auth", "token": NaN}',
        b'{"type": "pong", "type": "resume"}',
        b"\xff\xfe\xfd",  # invalid UTF-8 in a text frame
        b"\xed\xa0\x80",  # a UTF-8-encoded surrogate
        b"x" * 9000,  # over the frame limit
    ]
)
one_frame = st.tuples(
    st.sampled_from([TEXT, BINARY, CONTINUATION, PING, PONG, CLOSE, 0x3, 0xB]),
    protocol_shaped | nasty_text | st.binary(max_size=300),
    st.booleans(),  # fin
    st.booleans() | st.just(True),  # masked (mostly)
)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=st.lists(one_frame, min_size=1, max_size=4))
def test_fuzzed_frames_never_crash_the_server_or_leak(target, frames):
    asyncio.run(_send_frames(target, frames))


async def _send_frames(service: ServiceProcess, frames) -> None:
    ws = await RawWebSocket.open(service.port, "/ws?user_id=fuzzer")
    assert ws.status == 101
    try:
        assert (await ws.read_frame())[0] == TEXT  # connected
        try:
            for opcode, data, fin, mask in frames:
                await ws.send(frame(opcode, data, fin=fin, mask=mask))
            # Finish with a ping: an open connection answers pong; a closed one says how it closed.
            await ws.send(frame(PING, b"end"))
        except ConnectionError:
            # The server dropped a peer that broke the protocol while we were still writing:
            # a legitimate answer. What it sent before dropping is still checked below.
            _counts["closes"]["reset"] = _counts["closes"].get("reset", 0) + 1
        async with asyncio.timeout(10):
            while (received := await ws.read_frame()) is not None:
                opcode, data = received
                if opcode == TEXT:
                    assert not any(leak.encode() in data for leak in LEAKS)
                    assert msgspec.json.decode(data)["type"] in ("error", "ping", "task_update", "resync_required")
                elif opcode == CLOSE:
                    code = int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005
                    _counts["closes"][str(code)] = _counts["closes"].get(str(code), 0) + 1
                    assert code != 1011, data
                    assert not any(leak.encode() in data for leak in LEAKS)
                    break
                elif opcode == PONG and data == b"end":
                    break
    finally:
        await ws.close()
    _counts["frames"] += 1


def test_a_flood_of_fuzzed_frames_left_everyone_else_served(target):
    _canary_alive(target)


# -- ingest bodies ---------------------------------------------------------------------------

wrong_typed_event = st.fixed_dictionaries(
    {},
    optional={"event": json_like, "user_id": json_like, "task": json_like, "occurred_at": json_like, "id": json_like},
)
bodies = st.one_of(
    st.binary(max_size=500),
    wrong_typed_event.map(msgspec.json.encode),
    st.lists(wrong_typed_event, max_size=3).map(msgspec.json.encode),
    wrong_typed_event.map(lambda e: msgspec.json.encode(cloudevent(e))),
    st.lists(wrong_typed_event, max_size=3).map(lambda es: msgspec.json.encode(bulk([cloudevent(e) for e in es]))),
    nasty_text,
    st.just(b'{"event": "task.created", "user_id": "u", "task": {}}' + b" " * 70_000),  # over the body limit
)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies, route=st.sampled_from(["/v1/events", "/dapr/task-events"]))
def test_fuzzed_ingest_bodies_get_a_client_error_never_5xx(target, body, route):
    response = httpx.post(target.http + route, content=body, headers={"content-type": "application/json"})
    _counts["bodies"] += 1
    _counts["statuses"][response.status_code] = _counts["statuses"].get(response.status_code, 0) + 1
    assert response.status_code < 500
    assert not any(leak in response.text for leak in LEAKS)
    if route.startswith("/dapr"):
        # Dapr must never be told to retry what can never become valid.
        assert response.status_code == 200
        answer = response.json()
        statuses = [s["status"] for s in answer["statuses"]] if "statuses" in answer else [answer["status"]]
        assert set(statuses) <= {"SUCCESS", "DROP"}


def test_a_flood_of_fuzzed_bodies_left_everyone_else_served(target):
    _canary_alive(target)


# -- slow and idle clients -------------------------------------------------------------------


async def test_slowloris_handshakes_are_cut_off(start_service):
    service = start_service("--dev", "--handshake-timeout", "1")
    reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
    writer.write(b"GET /ws?user_id=slow HTTP/1.1\r\nHost: x\r\n")  # and never the rest
    await writer.drain()
    started = time.monotonic()
    assert await asyncio.wait_for(reader.read(), timeout=10) == b""  # closed by the server
    assert 0.5 < time.monotonic() - started < 5
    writer.close()
    await eventually(
        lambda: 'tasksync_handshakes_refused_total{reason="handshake_timeout"} 1.0'
        in httpx.get(service.http + "/metrics").text,
        what="the cut-off counted",
    )


async def test_idle_unauthenticated_sockets_are_cut_off(start_service):
    service = start_service("--auth", "jwt", "--auth-message-timeout", "1", env={"TASKSYNC_JWT_SECRET": "s" * 40})
    ws = await RawWebSocket.open(service.port, "/ws")
    started = time.monotonic()
    opcode, data = await asyncio.wait_for(ws.read_frame(), timeout=10)
    assert opcode == CLOSE and int.from_bytes(data[:2], "big") == 4001
    assert time.monotonic() - started < 5
    await ws.close()
