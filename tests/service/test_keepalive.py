"""Keepalive: a peer that vanished without closing (no FIN ever comes) is found by the WebSocket
pings the server sends every `keepalive_interval`, which any client's WebSocket stack answers by
itself. One that leaves a ping unanswered for `keepalive_timeout` is closed with 1011 and
counted; one that answers stays, however many pings go by."""

from __future__ import annotations

import asyncio
import struct

from tasksync.service import Service
from tests.support.raw_ws import CLOSE, PING, PONG, RawWebSocket, frame
from tests.support.servers import in_process_server

INTERVAL = 0.2
TIMEOUT = 0.3


def keepalive_cutoffs(service: Service) -> float:
    sample = service.metrics.registry.get_sample_value(
        "tasksync_transport_cutoffs_total", {"reason": "keepalive_timeout"}
    )
    return sample or 0.0


async def test_a_peer_that_leaves_a_ping_unanswered_is_closed_1011_and_counted():
    async with in_process_server(keepalive_interval=INTERVAL, keepalive_timeout=TIMEOUT) as (service, server):
        peer = await RawWebSocket.open(server.config.port, "/ws?user_id=alice")
        assert peer.status == 101
        opcodes = []
        async with asyncio.timeout(10):
            while (received := await peer.read_frame()) is not None:
                opcode, payload = received
                opcodes.append(opcode)
                if opcode == CLOSE:
                    break
        assert PING in opcodes, opcodes
        assert opcodes[-1] == CLOSE, opcodes
        assert struct.unpack("!H", payload[:2])[0] == 1011
        assert keepalive_cutoffs(service) == 1
        await peer.close()


async def test_a_peer_that_answers_every_ping_stays_connected():
    async with in_process_server(keepalive_interval=INTERVAL, keepalive_timeout=TIMEOUT) as (service, server):
        peer = await RawWebSocket.open(server.config.port, "/ws?user_id=alice")
        assert peer.status == 101
        answered = 0
        async with asyncio.timeout(10):
            while answered < 5:  # five pings: well past one interval and timeout
                received = await peer.read_frame()
                assert received is not None, "the server closed a peer that answers its pings"
                opcode, payload = received
                assert opcode != CLOSE, struct.unpack("!H", payload[:2])
                if opcode == PING:
                    await peer.send(frame(PONG, payload))
                    answered += 1
        assert keepalive_cutoffs(service) == 0
        await peer.close()


async def test_keepalive_interval_0_sends_no_pings():
    async with in_process_server(keepalive_interval=0, heartbeat_interval=INTERVAL) as (_, server):
        peer = await RawWebSocket.open(server.config.port, "/ws?user_id=alice")
        opcodes = []
        async with asyncio.timeout(10):
            # The application's heartbeat (a text frame) comes every INTERVAL: three of them span
            # several keepalive intervals and timeouts of the test above.
            while opcodes.count(0x1) < 4:
                received = await peer.read_frame()
                assert received is not None
                opcodes.append(received[0])
        assert PING not in opcodes and CLOSE not in opcodes
        await peer.close()
