"""Reach the transport under a WebSocket, to abort a connection whose peer stopped reading.

ASGI has no way to abort a connection: every send, including the close frame, waits until the
peer reads. uvicorn's `send` is a method of its protocol object, which holds the asyncio
transport; this middleware puts that transport's `abort` into the scope. Under another ASGI
server the key is absent and a stalled connection is only released when the session ends.
"""

from __future__ import annotations

from litestar.types import ASGIApp, Receive, Scope, Send

TRANSPORT_ABORT_KEY = "tasksync.transport_abort"


def transport_abort_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            transport = getattr(getattr(send, "__self__", None), "transport", None)
            if transport is not None and hasattr(transport, "abort"):
                scope[TRANSPORT_ABORT_KEY] = transport.abort  # type: ignore[literal-required]
        await app(scope, receive, send)

    return middleware
