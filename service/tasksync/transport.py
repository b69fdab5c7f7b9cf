"""TaskSync's two adaptations of uvicorn's WebSocket transport.

1. Aborting a connection whose peer stopped reading. ASGI has no way to abort a connection:
   every send, including the close frame, waits until the peer reads. uvicorn's `send` is a
   method of its protocol object, which holds the asyncio transport; the middleware below puts
   that transport's `abort` into the scope. Under another ASGI server the key is absent and a
   stalled connection is only released when the session ends.
2. Answering a handshake the WebSocket parser rejects. With a header line over 8 KiB (an
   oversized token in Sec-WebSocket-Protocol, say) the websockets parser prepares a 431
   response, but uvicorn's sans-I/O protocol never writes it and the connection hangs open.
   `WebSocketProtocol` writes it and closes.
"""

from __future__ import annotations

from litestar.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

TRANSPORT_ABORT_KEY = "tasksync.transport_abort"


def transport_abort_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            transport = getattr(getattr(send, "__self__", None), "transport", None)
            if transport is not None and hasattr(transport, "abort"):
                scope[TRANSPORT_ABORT_KEY] = transport.abort  # type: ignore[literal-required]
        await app(scope, receive, send)

    return middleware


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, plus the answer to a rejected handshake."""

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self.handshake_complete and self.conn.handshake_exc is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.transport.close()
