"""The reconnect storm's client retries once per lost attempt, like the web client.

A draining TaskSync answers the upgrade and closes with 1012 at once; both can arrive in one
read, so picows both tells the listener and returns an already closed transport. Counting that
loss twice made one client run two connections, and every event they both got counted as a
server duplicate.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib

from bench.loadgen.storm import Storm, _Client
from tests.support.waiting import eventually

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


async def upgrade_then_close_1012(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A draining server: the 101 answer and a 1012 close frame in one write."""
    request = await reader.readuntil(b"\r\n\r\n")
    key = next(
        line.split(b":", 1)[1].strip()
        for line in request.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key:")
    )
    accept = base64.b64encode(hashlib.sha1(key + GUID.encode()).digest())
    reason = b"service restarting"
    writer.write(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        + bytes([0x88, 2 + len(reason)]) + (1012).to_bytes(2, "big") + reason
    )
    await writer.drain()
    writer.close()


async def test_an_upgrade_closed_at_once_is_one_failed_attempt_and_one_retry():
    server = await asyncio.start_server(upgrade_then_close_1012, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    storm = Storm()
    storm.url = f"ws://127.0.0.1:{port}/ws"
    client = _Client(storm, 0, "s0")
    retries: list[int] = []
    client.schedule_retry = lambda: retries.append(client.failed_attempts)  # count, do not retry
    try:
        await client.attempt()
        await eventually(lambda: retries and not storm.transports, what="the attempt reported lost")
        assert retries == [1]
        assert client.failed_attempts == 1
        assert "closed before upgrade" not in storm.connect_errors
    finally:
        server.close()
        await server.wait_closed()
