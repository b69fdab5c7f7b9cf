"""Counting clients: open N sockets, then count deliveries and their latency.

A socket is ready when its first frame arrives (TaskSync's `connected`, a peer's hello,
Centrifugo's connect reply): by then the server has registered it, so a push cannot miss it.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from typing import Any

import jwt
from picows import WSCloseCode, WSListener, WSMsgType, WSTransport

from ..shape import SENT_MARK, SENT_WIDTH, Mode, user_of
from .common import cpu_seconds, open_websocket, percentiles_ms

MARK_LENGTH = len(SENT_MARK)
CENTRIFUGO_PING = b"{}"


class Stats:
    """Deliveries counted since the last reset. One instance for all sockets: cheaper than
    per-socket counters, and the workloads only ask for totals."""

    def __init__(self) -> None:
        self.ready = 0
        self.reset()

    def reset(self) -> None:
        self.received = 0
        self.last_ns = 0
        self.latencies = array("q")
        self.cpu_at_reset = cpu_seconds()
        self.reset_ns = time.monotonic_ns()

    def record(self, data: bytes, now: int) -> None:
        # Centrifugo may batch several publications into one frame, so count every mark.
        found = data.find(SENT_MARK)
        if found < 0:
            return  # a server's own frame (a heartbeat), not a delivery: it must not move last_ns
        while found >= 0:
            start = found + MARK_LENGTH
            self.latencies.append(now - int(data[start : start + SENT_WIDTH]))
            self.received += 1
            found = data.find(SENT_MARK, start + SENT_WIDTH)
        self.last_ns = now


class _Counter(WSListener):
    def __init__(self, stats: Stats, greeting: bytes | None) -> None:
        self.stats = stats
        self.greeting = greeting
        self.ready = False

    def on_ws_connected(self, transport: WSTransport) -> None:
        if self.greeting is not None:
            transport.send(WSMsgType.TEXT, self.greeting)

    def on_ws_frame(self, transport: WSTransport, frame) -> None:
        kind = frame.msg_type
        if kind == WSMsgType.TEXT:
            data = frame.get_payload_as_bytes()
            if not self.ready:
                self.ready = True
                self.stats.ready += 1
            elif data == CENTRIFUGO_PING:
                # Centrifugo closes a client that does not answer its ping with a pong.
                transport.send(WSMsgType.TEXT, CENTRIFUGO_PING)
            else:
                self.stats.record(data, time.monotonic_ns())
        elif kind == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()


class Fanout:
    def __init__(self) -> None:
        self.stats = Stats()
        self.transports: list[WSTransport] = []

    async def connect(self, command: dict[str, Any]) -> dict[str, Any]:
        """Open `sockets` sockets as `mode`'s users, spread over `urls` (socket i on urls[i % n])."""
        urls: list[str] = command["urls"]
        mode: Mode = command["mode"]
        count: int = command["sockets"]
        protocol: str = command.get("protocol", "plain")
        secret: str | None = command.get("secret")
        # What a browser sends: every browser offers permessage-deflate.
        headers = {"Sec-WebSocket-Extensions": command["extensions"]} if command.get("extensions") else None
        limit = asyncio.Semaphore(command.get("concurrency", 200))
        deadline = time.monotonic() + command.get("timeout", 120)
        started = time.monotonic()
        self.stats.ready = 0
        failures: list[str] = []

        async def open_one(index: int) -> None:
            user = user_of(mode, index)
            base = urls[index % len(urls)]
            if protocol == "centrifugo":
                token = jwt.encode({"sub": user, "exp": int(time.time()) + 3600}, secret, algorithm="HS256")
                url, greeting = base, b'{"id":1,"connect":{"token":"%s"}}' % token.encode()
            else:
                url, greeting = f"{base}?user_id={user}", None
            async with limit:
                opened = await open_websocket(
                    lambda: _Counter(self.stats, greeting),
                    url,
                    index,
                    failures,
                    websocket_handshake_timeout=30,
                    extra_headers=headers,
                )
            if opened is not None:
                self.transports.append(opened[0])

        await asyncio.gather(*(open_one(i) for i in range(count)))
        while self.stats.ready < len(self.transports) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return {
            "connected": len(self.transports),
            "ready": self.stats.ready,
            "failed": len(failures),
            "first_failure": failures[0] if failures else None,
            "seconds": time.monotonic() - started,
        }

    def reset(self) -> dict[str, Any]:
        self.stats.reset()
        return {"ok": True}

    async def wait(self, command: dict[str, Any]) -> dict[str, Any]:
        """Wait for `deliveries` deliveries since the last reset (or `timeout`), then report
        them: count, last arrival, latency percentiles and this process's CPU time."""
        target: int = command["deliveries"]
        deadline = time.monotonic() + command["timeout"]
        stats = self.stats
        while stats.received < target and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return {
            "received": stats.received,
            "last_ns": stats.last_ns,
            "latency_ms": percentiles_ms(stats.latencies),
            "cpu_s": cpu_seconds() - stats.cpu_at_reset,
            "wall_s": (time.monotonic_ns() - stats.reset_ns) / 1e9,
        }

    async def close(self) -> dict[str, Any]:
        transports, self.transports = self.transports, []
        for transport in transports:
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()
        if transports:
            waits = [asyncio.ensure_future(transport.wait_disconnected()) for transport in transports]
            _, pending = await asyncio.wait(waits, timeout=30)
            for waiting in pending:
                waiting.cancel()
        return {"closed": len(transports)}
