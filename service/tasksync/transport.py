"""TaskSync's adaptations of uvicorn's transports.

1. Aborting a connection whose peer stopped reading, and writing a frame at once when nothing
   is queued. ASGI has no way to abort a connection (every send, including the close frame,
   waits until the peer reads) nor a synchronous send; `WebSocketProtocol` puts both into the
   scope. Under another ASGI server the keys are absent: a stalled connection is then only
   released when its session ends, and every frame goes through the writer task.
2. Answering a handshake the WebSocket parser rejects. With a header line over 8 KiB (an
   oversized token in Sec-WebSocket-Protocol, say) the websockets parser prepares a 431
   response, but uvicorn's sans-I/O protocol never writes it and the connection hangs open.
   `WebSocketProtocol` writes it and closes.
3. Logging a client's invalid UTF-8 as what it is. uvicorn closes such a connection correctly
   (1007) but logs it as an ERROR with a stack trace, which lets any client flood the error
   log; `quiet_client_protocol_errors()` turns it into a one-line warning.
4. Holding less per idle connection. uvicorn keeps an asyncio.Queue and an asyncio.Event per
   connection (four deques, about 3 KiB, for a queue that never holds more than a few
   messages) and the handshake's request and response with their headers for as long as the
   connection lives. `WebSocketProtocol` swaps in single-consumer equivalents and lets go of
   the handshake once it is answered.
5. Cutting off slow handshakes (slowloris). uvicorn waits forever for a request's headers; a
   client that trickles them holds a connection and a file descriptor indefinitely.
   `http_protocol()` closes a connection whose request headers are not complete within the
   handshake timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

TRANSPORT_ABORT_KEY = "tasksync.transport_abort"
TRANSPORT_SEND_NOW_KEY = "tasksync.transport_send_now"


class ReceiveQueue:
    """The part of asyncio.Queue uvicorn's protocol uses, for its one consumer (the app's
    `receive`). uvicorn pauses reading after every message, so it holds a handful at most."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def empty(self) -> bool:
        return not self._items

    async def get(self) -> Any:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.pop(0)


class WritableFlag:
    """The part of asyncio.Event uvicorn's protocol uses for "the transport takes data", with
    its waiters' list made only when a send actually has to wait."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = True
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        if self._set:
            return
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        await waiter


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol with the adaptations listed above."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = ReceiveQueue()  # type: ignore[assignment]
        self.writable = WritableFlag()  # type: ignore[assignment]

    async def send(self, message: Any) -> None:
        await super().send(message)
        if self.handshake_complete and self.response is not None:
            # Answered: nothing reads the handshake's request or response again. The request
            # object itself stays referenced by the websockets parser's generator frame, so
            # its headers are emptied rather than just dropped.
            self.request.headers.clear()
            self.request = self.response = None  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self.handshake_complete and self.conn.handshake_exc is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.transport.close()

    async def run_asgi(self) -> None:
        # The protocol itself knows its transport, whatever wraps `send` on the way to the app
        # (Litestar's exception middleware does, so nothing reachable from `send` would).
        self.scope[TRANSPORT_ABORT_KEY] = self.transport.abort  # type: ignore[literal-required]
        self.scope[TRANSPORT_SEND_NOW_KEY] = self.send_text_now  # type: ignore[literal-required]
        await super().run_asgi()

    def send_text_now(self, text: str, wire: bytes) -> bool:
        """Write one text frame synchronously, as `websockets.broadcast()` does, when the
        connection is open and its transport is not pushing back; False leaves the frame to the
        ASGI send path (the connection's writer task), which waits for the transport.

        `wire` is the same frame already serialized (`protocol.text_frame`): without an
        extension, a server's frame is the same bytes on every socket, so the event is framed
        once. With permessage-deflate each socket compresses its own."""
        # The fewest checks that keep this correct, on the hot path of every delivery. The
        # others uvicorn's own send makes are implied: a peer's close frame, a lost connection
        # and a failed protocol all close the transport at once; an HTTP answer instead of an
        # upgrade never completes the handshake; uvicorn never fragments what it sends.
        if (
            not self.handshake_complete
            or self.close_sent
            or not self.writable.is_set()
            or self.transport.is_closing()
        ):
            return False
        conn = self.conn
        if conn.extensions:
            conn.send_text(text.encode())
            self.transport.write(b"".join(conn.data_to_send()))
        else:
            self.transport.write(wire)
        return True


def http_protocol(handshake_timeout: float, on_timeout: Callable[[], None]) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with a deadline on every request's headers."""

    class HeaderDeadlineProtocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()  # each request on a kept-alive connection gets its own deadline

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(handshake_timeout, self._too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _too_slow(self) -> None:
            self._header_timer = None
            on_timeout()
            self.transport.close()

    return HeaderDeadlineProtocol


class _ClientProtocolErrorsAsWarnings(logging.Filter):
    MESSAGES = frozenset({"Invalid UTF-8 sequence received from client."})

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg in self.MESSAGES:
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def quiet_client_protocol_errors() -> None:
    logging.getLogger("uvicorn.error").addFilter(_ClientProtocolErrorsAsWarnings())
