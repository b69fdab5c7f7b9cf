"""Handshakes per second: open a socket, wait for TaskSync's `connected` frame (auth done, the
connection registered and its stream opened) or the reference server's `hello`, close it;
`concurrency` at a time."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import jwt
from picows import WSCloseCode, WSListener, WSMsgType, WSTransport

from .common import cpu_seconds, open_websocket


class _FirstFrame(WSListener):
    def __init__(self) -> None:
        self.first: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def on_ws_frame(self, transport: WSTransport, frame) -> None:
        if frame.msg_type == WSMsgType.TEXT and not self.first.done():
            self.first.set_result(frame.get_payload_as_bytes())
        elif frame.msg_type == WSMsgType.CLOSE and not self.first.done():
            self.first.set_exception(ConnectionError(f"closed with {int(frame.get_close_code())}"))

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.first.done():
            self.first.set_exception(ConnectionError("disconnected before the first frame"))


async def handshakes(command: dict[str, Any]) -> dict[str, Any]:
    url: str = command["url"]
    count: int = command["count"]
    secret: str | None = command.get("jwt_secret")
    # The first frame that proves the handshake done: TaskSync's `connected`, or the reference
    # server's `hello`.
    expected = b'"%s"' % command.get("first_frame", "connected").encode()
    users = command.get("users", 1000)
    # Tokens are signed before the clock starts: signing is the client's cost, not the server's.
    expiry = int(time.time()) + 3600
    offers = ["tasksync.v1"] * users
    if secret:
        tokens = (jwt.encode({"sub": f"u{i}", "exp": expiry}, secret, algorithm="HS256") for i in range(users))
        offers = [f"tasksync.v1, bearer.{token}" for token in tokens]
    headers = [{"Sec-WebSocket-Protocol": offer} for offer in offers]
    limit = asyncio.Semaphore(command.get("concurrency", 64))
    failures: list[str] = []
    completed = 0

    async def one(index: int) -> None:
        nonlocal completed
        async with limit:
            target = url if secret else f"{url}?user_id=u{index % users}"
            opened = await open_websocket(
                _FirstFrame, target, index, failures, extra_headers=headers[index % len(headers)]
            )
            if opened is None:
                return
            transport, listener = opened
            try:
                first = await asyncio.wait_for(listener.first, 30)
                if expected in first:
                    completed += 1
                else:
                    failures.append(f"unexpected first frame {first[:100]!r}")
            except (TimeoutError, ConnectionError) as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
            finally:
                transport.send_close(WSCloseCode.OK)
                transport.disconnect()

    cpu = cpu_seconds()
    started = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(count)))
    elapsed = time.monotonic() - started
    return {
        "completed": completed,
        "failed": len(failures),
        "first_failure": failures[0] if failures else None,
        "seconds": elapsed,
        "cpu_s": cpu_seconds() - cpu,
    }
