"""Bad input on /ws: every case gets a clear answer and the others keep being served."""

from __future__ import annotations

import httpx
import pytest
from websockets.asyncio.client import connect

from tasksync.client import SyncClient
from tasksync.protocol import Error, Pong, Resume
from tests.service.test_delivery import next_update, publish_http
from tests.support.events import payload


async def expect_error(client: SyncClient, code: str) -> Error:
    while True:
        frame = await client.receive()
        if isinstance(frame, Error):
            assert frame.code == code, frame
            return frame


@pytest.mark.parametrize(
    ("raw", "code", "says"),
    [
        ("{nope", "invalid_json", "not valid JSON"),
        ('{"type": "hello"}', "unknown_type", "'hello'"),
        ('{"kind": "pong"}', "invalid_frame", "no 'type'"),
        ("[1, 2]", "invalid_frame", "JSON object"),
        ('{"type": "resume", "since": "x", "epoch": "e"}', "invalid_frame", "since"),
    ],
)
async def test_bad_client_frames_get_an_error_frame_and_the_connection_stays(dev_service, raw, code, says):
    async with SyncClient(dev_service.ws, user_id="ivan") as ivan:
        await ivan.send_raw(raw)
        error = await expect_error(ivan, code)
        assert says in error.message
        # Still connected and still served.
        await ivan.send(Pong())
        await publish_http(dev_service, payload("ivan", title="after"))
        assert (await next_update(ivan)).task["title"] == "after"


async def test_binary_frame_closes_1003_and_others_are_unaffected(dev_service):
    async with SyncClient(dev_service.ws, user_id="judy") as judy, SyncClient(dev_service.ws, user_id="ken") as ken:
        await judy.send_raw(b"\x00\x01binary")
        code, reason = await judy.wait_closed()
        assert code == 1003 and "binary" in reason
        await publish_http(dev_service, payload("ken", title="still here"))
        assert (await next_update(ken)).task["title"] == "still here"


async def test_oversized_frame_closes_1009(start_service):
    service = start_service("--dev", "--max-frame-bytes", "1024")
    async with SyncClient(service.ws, user_id="leo") as leo:
        await leo.send_raw('{"type": "pong", "pad": "' + "x" * 2000 + '"}')
        code, reason = await leo.wait_closed()
        assert code == 1009 and "1024" in reason


async def test_handshake_without_a_user_closes_1008_saying_so(dev_service):
    client = SyncClient(dev_service.ws)
    async with connect(client.handshake_url()) as ws:
        await ws.wait_closed()
        assert ws.close_code == 1008
        assert "no user" in ws.close_reason


@pytest.mark.parametrize(
    ("query", "says"),
    [("since=5", "both"), ("since=-1&epoch=e", "non-negative"), ("since=abc&epoch=e", "non-negative")],
)
async def test_bad_resume_parameters_close_1008(dev_service, query, says):
    async with connect(f"{dev_service.ws}?user_id=mia&{query}") as ws:
        await ws.wait_closed()
        assert ws.close_code == 1008 and says in ws.close_reason


async def test_unsupported_subprotocol_closes_1008(dev_service):
    async with connect(f"{dev_service.ws}?user_id=ned", subprotocols=["chat.v9"]) as ws:
        await ws.wait_closed()
        assert ws.close_code == 1008 and "tasksync.v1" in ws.close_reason


async def test_tasksync_subprotocol_is_echoed(dev_service):
    async with connect(f"{dev_service.ws}?user_id=ola", subprotocols=["tasksync.v1"]) as ws:
        assert ws.subprotocol == "tasksync.v1"


async def test_resume_message_replays_what_followed(dev_service):
    async with SyncClient(dev_service.ws, user_id="pia") as pia:
        await publish_http(dev_service, [payload("pia", title=t) for t in ("a", "b", "c")])
        assert [(await next_update(pia)).seq for _ in range(3)] == [1, 2, 3]
        await pia.send(Resume(since=1, epoch=pia.epoch))
        replayed = [await next_update(pia) for _ in range(2)]
        assert [(u.seq, u.task["title"]) for u in replayed] == [(2, "b"), (3, "c")]


async def test_rejections_are_counted(dev_service):
    async with SyncClient(dev_service.ws, user_id="quinn") as quinn:
        await quinn.send_raw('{"type": "hello"}')
        await expect_error(quinn, "unknown_type")
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(dev_service.http + "/metrics")).text
    assert 'tasksync_client_frames_rejected_total{reason="unknown_type"} 1.0' in metrics


async def test_a_client_vanishing_mid_send_is_forgotten_cleanly(dev_service):
    from tests.support.metrics import value
    from tests.support.raw_ws import CLOSE, RawWebSocket, frame
    from tests.support.waiting import eventually

    for n in range(40):
        ws = await RawWebSocket.open(dev_service.port, "/ws?user_id=vanisher")
        await ws.read_frame()
        await publish_http(dev_service, [payload("vanisher", blob="x" * 20_000) for _ in range(20)])
        if n % 2:
            ws.writer.transport.abort()  # gone without a close frame while frames are in flight
        else:
            await ws.send(frame(CLOSE, (1000).to_bytes(2, "big")))  # a close while frames are in flight
            await ws.close()
    await eventually(lambda: value(dev_service, "tasksync_connections_active") == 0, what="every session ended")
    assert value(dev_service, "tasksync_connected_users") == 0
    assert "Uncaught exception" not in dev_service.log()
