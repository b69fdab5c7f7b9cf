"""TaskSync's adaptations of uvicorn's transports.

1. The `Transport` a connection writes through (connection.py): a synchronous write when
   nothing is queued, the awaitable send, the close, and an abort. ASGI has no way to abort a
   connection (every send, including the close frame, waits until the peer reads) nor a
   synchronous send; `WebSocketProtocol` implements the whole interface on uvicorn's protocol
   and hands itself to the session through the scope. Under another ASGI server,
   `AsgiTransport` stands in: every frame then goes through the awaitable send, and a stalled
   connection can only be released by ending its session, not its socket.
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
   the handshake once it is answered. It also sets 37 attributes on every connection, and
   CPython keeps an object's attributes in a compact table shared with its class only up to 29
   of them: beyond, each connection holds a full dict of its own (1.6 KiB against 0.3). The 12
   that are the same on every connection of a server (its config, loop, logger, shared state,
   timeouts) are kept once, on the server's protocol class (`ServerWide`).
5. Bounding every HTTP request's head and body (slowloris, endless headers, trickled bodies).
   uvicorn waits forever for a request's headers and its body, and keeps every header byte it
   is sent (httptools accumulates a header line until it ends). `http_protocol()` closes a
   connection whose headers are not complete within the handshake timeout, answers 431 and
   closes once a request head outgrows its byte cap (before the WebSocket parser's own
   8 KiB-per-line rule could apply), and closes one whose body has not arrived within the body
   timeout (408 when nothing was answered yet).
6. Backpressure on pongs. websockets answers every ping with a pong and uvicorn writes it
   whatever the transport's buffer holds, so a peer that sends pings and never reads grows the
   write buffer without end, with or without a session (before authentication too).
   `WebSocketProtocol` stops reading from a peer while its write buffer is over the high-water
   mark (TCP then pushes back on the peer), and aborts the connection when the peer has read
   nothing for the send timeout, so the socket and its buffer are released in bounded time.
7. Counting the peers uvicorn closes for leaving its keepalive ping unanswered (peers that
   vanished without closing), which it only logs at its trace level.
8. A handshake answered by uvicorn's shutdown (500) while the application was deciding takes
   the application's own answer quietly instead of failing with an AssertionError.
9. Reading the upgrade request once. uvicorn's HTTP protocol parses it with httptools, then
   writes it out again for the websockets parser to read a second time, in Python.
   `handshake_request()` builds websockets' `Request` from what httptools read, with the
   websockets parser's own limits and checks, and `WebSocketProtocol.upgrade()` hands it to the
   handshake; a request those checks would refuse still goes uvicorn's way, so websockets
   answers it as before.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from litestar import WebSocket
from litestar.connection.base import empty_receive, empty_send
from websockets.datastructures import Headers
from websockets.exceptions import InvalidHeaderValue
from websockets.http11 import MAX_LINE_LENGTH, MAX_NUM_HEADERS, Request
from websockets.protocol import Protocol

from .connection import Transport

# Through uvicorn_compat, which checks on import that the installed uvicorn has every part used
# here and names the supported versions when it does not.
from .uvicorn_compat import STATUS_LINE, TRACE_LOG_LEVEL, HttpToolsProtocol, WebSocketsSansIOProtocol

# The scope key under which `WebSocketProtocol` hands itself to the application.
TRANSPORT_KEY = "tasksync.transport"
# A header name as the websockets parser accepts it (an RFC 9110 token).
HEADER_NAME = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")


def handshake_request(method: bytes, target: bytes, headers: Iterable[tuple[bytes, bytes]]) -> Request | None:
    """The `Request` the websockets parser would read from this request as uvicorn writes it
    out (`METHOD target HTTP/1.1`, then `name: value` lines), or None where that parser would
    refuse it or answer it itself: a line longer than its limit (414, 431), more headers than
    its limit (431), a name or value it rejects, a body (Transfer-Encoding or Content-Length,
    which no browser sends with an upgrade)."""
    if len(method) + len(target) + len(b"  HTTP/1.1\r\n") > MAX_LINE_LENGTH:
        return None
    parsed = Headers()
    try:
        for count, (name, value) in enumerate(headers, 1):
            if (
                count > MAX_NUM_HEADERS
                or len(name) + len(value) + len(b": \r\n") > MAX_LINE_LENGTH
                or not HEADER_NAME.fullmatch(name)
            ):
                return None
            # Validated by Headers itself, with the websockets parser's rule for a value.
            parsed[name.decode("ascii")] = value.strip(b" \t").decode("iso-8859-1")
        path = target.decode("ascii")
    except (UnicodeDecodeError, InvalidHeaderValue):
        return None
    if "Transfer-Encoding" in parsed or "Content-Length" in parsed:
        return None
    return Request(path, parsed, method.decode("ascii"), "HTTP/1.1")


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

    def has_waiters(self) -> bool:
        return any(not waiter.done() for waiter in self._waiters or ())

    async def wait(self) -> None:
        if self._set:
            return
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        await waiter


# What uvicorn's WebSocket protocol assigns on every connection to the same value for every
# connection of one server. Not `default_headers`: uvicorn replaces that list every second (its
# Date header), and a connection answers its handshake with the one current at its start.
SERVER_WIDE = (
    "config", "app", "loop", "logger", "root_path", "asgi_version", "app_state", "connections", "tasks",
    "close_timeout", "ping_interval", "ping_timeout",
)  # fmt: skip
_UNSET: Any = object()


class ServerWide:
    """An attribute uvicorn assigns on each connection's protocol, held once by the server's
    protocol class (see `websocket_protocol()`) instead of by each connection. The first
    connection's value is kept; a later connection bringing another one means the class is shared
    by two servers, which it must not be."""

    __slots__ = ("_name", "_value")

    def __init__(self, name: str) -> None:
        self._name = name
        self._value = _UNSET

    def __get__(self, protocol: object, owner: type | None = None) -> Any:
        if protocol is None:
            return self
        if self._value is _UNSET:
            raise AttributeError(self._name)
        return self._value

    def __set__(self, protocol: object, value: Any) -> None:
        if self._value is _UNSET:
            self._value = value
        elif value is not self._value and value != self._value:
            raise RuntimeError(f"one protocol class serves two servers: their {self._name} differ")


# The parts of a WebSocketProtocol's state that decide whether `write_now` may write straight to
# the transport, as bits of one int (`_write_bits`): it may when exactly HANDSHAKE_DONE is set.
HANDSHAKE_DONE = 1
CLOSE_SENT = 2
WRITES_PAUSED = 4
EXTENSIONS = 8
LOST = 16


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol with the adaptations listed above."""

    # How long a peer may read nothing (writes paused) before its transport is aborted, and
    # what to count when it is: `websocket_protocol()` sets both from the settings.
    write_stall_timeout: float = 10.0
    on_write_stalled: Callable[[], None] = staticmethod(lambda: None)
    # What to count when a peer does not answer uvicorn's keepalive ping in time.
    on_keepalive_timeout: Callable[[], None] = staticmethod(lambda: None)
    # Class-level until armed: an idle connection holds no attribute for it.
    _stall_timer: asyncio.TimerHandle | None = None
    # `write_now` runs for every socket of every delivery, and each object it touches is most
    # likely out of the CPU's cache by then: the four conditions it checks are kept in this one
    # int, updated wherever uvicorn changes them (its assignments to `handshake_complete` and
    # `close_sent` land in the properties below; pausing and losing the connection come through
    # the overrides), so the check reads one attribute of the protocol instead of four objects.
    _write_bits = 0
    # Whether the application's task for this connection has started and not yet ended
    # (uvicorn's `tasks` is the whole server's).
    _app_running = False
    # uvicorn's own are an asyncio.Queue and an asyncio.Event: these use the part of them it uses.
    queue: ReceiveQueue  # type: ignore[assignment]
    writable: WritableFlag  # type: ignore[assignment]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = ReceiveQueue()
        self.writable = WritableFlag()

    @property
    def handshake_complete(self) -> bool:
        return bool(self._write_bits & HANDSHAKE_DONE)

    @handshake_complete.setter
    def handshake_complete(self, done: bool) -> None:
        if done and not self._write_bits & HANDSHAKE_DONE and self.conn.extensions:
            # Negotiated by the time the handshake is answered, and fixed from then on.
            self._write_bits |= EXTENSIONS
        self._set_write_bit(HANDSHAKE_DONE, done)

    @property
    def close_sent(self) -> bool:
        return bool(self._write_bits & CLOSE_SENT)

    @close_sent.setter
    def close_sent(self, sent: bool) -> None:
        self._set_write_bit(CLOSE_SENT, sent)

    def _set_write_bit(self, bit: int, on: bool) -> None:
        self._write_bits = self._write_bits | bit if on else self._write_bits & ~bit

    async def send(self, message: Any) -> None:
        if not self.handshake_complete and self.transport.is_closing():
            # Answered already, though not by the application: uvicorn's shutdown writes a 500 to
            # a handshake still waiting for its answer, and closes. uvicorn drops an accept sent
            # after that, but a close would write a second answer, which websockets refuses with
            # an AssertionError (logged as an application error, one per handshake refused by a
            # draining server in the instant it exits).
            return
        await super().send(message)
        if self.handshake_complete and self.response is not None:
            # Answered: nothing reads the handshake's request or response again. The request
            # object itself stays referenced by the websockets parser's generator frame, so
            # its headers are emptied rather than just dropped.
            self.request.headers.clear()
            self.request = self.response = None  # type: ignore[assignment]
        # Sending a close resumes reading, for the peer's close frame.
        self._hold_reading_while_backlogged()

    async def receive(self) -> Any:
        message = await super().receive()
        # Taking a message resumes reading, for the next one.
        self._hold_reading_while_backlogged()
        return message

    def pause_writing(self) -> None:
        super().pause_writing()
        self._write_bits |= WRITES_PAUSED
        # websockets answers every ping with a pong and uvicorn writes it whatever the buffer
        # holds: a peer that sends and never reads would grow the buffer without end. Not
        # reading it while the buffer is full makes TCP push back on it instead; its pings wait
        # in the kernel's buffers, and are answered once it reads again.
        self.transport.pause_reading()
        if self._stall_timer is None:
            self._stall_timer = self.loop.call_later(self.write_stall_timeout, self._write_stalled, True)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._write_bits &= ~WRITES_PAUSED
        self._cancel_stall_timer()
        if not self.read_paused:  # uvicorn's own pause: the app has not taken the last message
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_stall_timer()
        super().connection_lost(exc)
        self._write_bits |= LOST
        if not self._app_running:
            self._release()

    def on_task_complete(self, task: asyncio.Task[None]) -> None:
        super().on_task_complete(task)
        self._app_running = False
        if self._write_bits & LOST:
            self._release()

    def _release(self) -> None:
        """Lost, and the application done with it: break the cycles that would keep this
        protocol, its transport and its socket's scope alive until a full collection found
        them (the scope refers back to the protocol; websockets' parser is a generator whose
        frame refers to its own connection). Reference counting then frees them at once."""
        scope = getattr(self, "scope", None)  # set by handle_connect, if the request got that far
        if scope is not None:
            scope.pop(TRANSPORT_KEY, None)
        self.conn.parser.close()

    def _hold_reading_while_backlogged(self) -> None:
        # uvicorn resumes reading for reasons of its own; a write backlog outranks them.
        if not self.writable.is_set():
            self.transport.pause_reading()

    def _cancel_stall_timer(self) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None

    def _write_stalled(self, session_may_act: bool) -> None:
        """The write buffer has not drained for the stall timeout: the peer reads nothing, or
        too little to matter. Abort, which frees the socket and whatever its buffer holds (a
        graceful close would wait for the peer to read it)."""
        self._stall_timer = None
        if session_may_act and self.writable.has_waiters():
            # A send is stuck as well. For an admitted connection the session's stall watch
            # aborts it within the timeout and records why (connections_closed{reason="stalled"});
            # this stays the backstop for sends nothing else watches, such as the close of a
            # socket refused before authentication.
            self._stall_timer = self.loop.call_later(2 * self.write_stall_timeout, self._write_stalled, False)
            return
        self.on_write_stalled()
        self.transport.abort()

    def keepalive_timeout(self) -> None:
        # uvicorn returns without closing when the connection is closing already.
        unanswered = not self.close_sent and not self.transport.is_closing()
        super().keepalive_timeout()
        if unanswered:
            self.on_keepalive_timeout()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self.handshake_complete and self.conn.handshake_exc is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.transport.close()

    def upgrade(self, request: Request) -> None:
        """Start the handshake of an upgrade request uvicorn's HTTP parser has read, as built by
        `handshake_request()`, instead of having the websockets parser read it again."""
        conn = self.conn
        # The parser waits for a request it will not be given: from here it reads frames, as it
        # would once it had parsed one.
        conn.parser.close()
        conn.parser = Protocol.parse(conn)
        next(conn.parser)
        self.handle_connect(request)

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        self._app_running = True
        # The protocol itself is the connection's transport, whatever wraps `send` on the way to
        # the app (Litestar's exception middleware does, so nothing reachable from `send` would).
        # Set here, before the application task first runs, rather than in an override of
        # run_asgi, whose coroutine frame would stay on the stack for the connection's life.
        self.scope[TRANSPORT_KEY] = self  # type: ignore[literal-required]

    # The `Transport` interface (connection.py).

    def write_now(self, text: str, wire: bytes) -> bool:
        """Write one text frame synchronously, as `websockets.broadcast()` does, when the
        connection is open and its transport is not pushing back; False leaves the frame to the
        connection's writer, which waits for the transport. Without an extension a server's
        frame is the same bytes on every socket (`wire`); with permessage-deflate each socket
        compresses its own."""
        # The fewest checks that keep this correct, on the hot path of every delivery. The
        # others uvicorn's own send makes are implied: a peer's close frame, a lost connection
        # and a failed protocol all close the transport at once; an HTTP answer instead of an
        # upgrade never completes the handshake; uvicorn never fragments what it sends.
        bits = self._write_bits
        if bits == HANDSHAKE_DONE:
            transport = self.transport
            if transport.is_closing():
                return False
            transport.write(wire)
            return True
        if bits != HANDSHAKE_DONE | EXTENSIONS or self.transport.is_closing():
            return False
        conn = self.conn
        conn.send_text(text.encode())
        self.transport.write(b"".join(conn.data_to_send()))
        return True

    async def send_text(self, text: str) -> None:
        await self.send({"type": "websocket.send", "text": text})

    async def send_close(self, code: int, reason: str) -> None:
        await self.send({"type": "websocket.close", "code": code, "reason": reason})

    def abort(self) -> None:
        # connection_lost follows: the app's receive gets a disconnect, and a send waiting on
        # `writable` is released and fails, so the session ends as for a peer that went away.
        self.transport.abort()


class AsgiTransport:
    """The `Transport` of a socket served by another ASGI server than TaskSync's uvicorn
    protocol: no synchronous write, and no abort below ASGI, so aborting ends the session (the
    server keeps the socket until its own timeouts)."""

    __slots__ = ("_session", "_socket")

    def __init__(self, socket: WebSocket, session: asyncio.Task[Any]) -> None:
        self._socket = socket
        self._session = session

    def write_now(self, text: str, wire: bytes) -> bool:
        return False

    async def send_text(self, text: str) -> None:
        await self._socket.send_text(text)

    async def send_close(self, code: int, reason: str) -> None:
        await self._socket.close(code, reason)

    async def receive(self) -> Mapping[str, Any]:
        return await self._socket.receive()

    def abort(self) -> None:
        self._session.cancel()


def transport_of(socket: WebSocket) -> Transport:
    """The transport of a socket, from within its session's task."""
    transport: Transport | None = socket.scope.get(TRANSPORT_KEY)  # type: ignore[assignment]
    if transport is not None:
        return transport
    session = asyncio.current_task()
    assert session is not None, "a session runs in a task"
    return AsgiTransport(socket, session)


def release(socket: WebSocket) -> None:
    """Untie a socket whose session is over from Litestar's wrappers. Each wraps the protocol's
    receive or send in a closure over the socket itself: a reference cycle that kept the socket,
    its scope and through them the whole protocol (about 40 objects a connection) in memory
    until a full collection found them. Untied, they are freed as the session returns."""
    socket.receive, socket.send = empty_receive, empty_send


def websocket_protocol(
    send_timeout: float, on_stalled: Callable[[], None], on_unanswered_ping: Callable[[], None] = lambda: None
) -> type[WebSocketProtocol]:
    """`WebSocketProtocol` aborting a peer that reads nothing for `send_timeout` seconds and
    counting those that leave a keepalive ping unanswered, for one server: what is the same on
    all of its connections is kept once (`ServerWide`)."""

    class ConfiguredWebSocketProtocol(WebSocketProtocol):
        write_stall_timeout = send_timeout
        on_write_stalled = staticmethod(on_stalled)
        on_keepalive_timeout = staticmethod(on_unanswered_ping)

    for name in SERVER_WIDE:
        setattr(ConfiguredWebSocketProtocol, name, ServerWide(name))
    return ConfiguredWebSocketProtocol


@dataclass(frozen=True, slots=True)
class RequestBounds:
    """How long and how large an HTTP request may be, and what to count when one is cut off."""

    head_timeout: float
    max_head_bytes: int
    body_timeout: float
    on_head_timeout: Callable[[], None]
    on_head_too_large: Callable[[], None]
    on_body_timeout: Callable[[], None]


def http_protocol(bounds: RequestBounds) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with a deadline on every request's head, a byte cap on it
    and a deadline on its body."""

    class BoundedHttpProtocol(HttpToolsProtocol):
        # One deadline at a time: the head's, then the body's. Class-level until first armed.
        _timer: asyncio.TimerHandle | None = None
        # Bytes of the current request head read so far; None while a body is read.
        _head_bytes: int | None = 0

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm(bounds.head_timeout, self._head_too_slow)

        def data_received(self, data: bytes) -> None:
            # Counted per read, before the parser keeps any of it: httptools accumulates a
            # header line until it ends, and uvicorn every header. The bytes of a kept-alive
            # connection's next head that share a read with the previous request are not
            # counted, which loosens the cap by one read at most.
            while self._head_bytes is not None and len(data) > bounds.max_head_bytes - self._head_bytes:
                allowed = bounds.max_head_bytes - self._head_bytes
                self._head_bytes = bounds.max_head_bytes
                super().data_received(data[:allowed])
                if self.transport.is_closing() or self.transport.get_protocol() is not self:
                    return  # refused, or upgraded to a WebSocket (which uvicorn hands only the head)
                if self._head_bytes == bounds.max_head_bytes:  # the head did not end within the cap
                    self._head_too_large()
                    return
                data = data[allowed:]
            if self._head_bytes is not None:
                self._head_bytes += len(data)
            super().data_received(data)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm(bounds.head_timeout, self._head_too_slow)  # each request has its own deadline

        def on_headers_complete(self) -> None:
            self._head_bytes = None
            super().on_headers_complete()
            self._arm(bounds.body_timeout, self._body_too_slow)

        def on_message_complete(self) -> None:
            self._disarm()
            self._head_bytes = 0
            super().on_message_complete()

        def handle_websocket_upgrade(self) -> None:
            self._disarm()
            protocol_class = self.ws_protocol_class
            # Not for another implementation (the benchmarks' variants), nor when the websockets
            # parser would log the request it reads (debug).
            if (
                protocol_class is not None
                and issubclass(protocol_class, WebSocketProtocol)
                and not self.logger.isEnabledFor(logging.DEBUG)
                and (request := handshake_request(self.scope["method"].encode(), self.url, self.scope["headers"]))
            ):
                self._upgrade(protocol_class, request)
            else:
                super().handle_websocket_upgrade()

        def _upgrade(self, protocol_class: type[WebSocketProtocol], request: Request) -> None:
            """uvicorn's steps, with the request handed over as read rather than as bytes."""
            if self.logger.level <= TRACE_LOG_LEVEL:
                prefix = f"{self.client[0]}:{self.client[1]} - " if self.client else ""
                self.logger.log(TRACE_LOG_LEVEL, "%sUpgrading to WebSocket", prefix)
            self.connections.discard(self)
            protocol = protocol_class(config=self.config, server_state=self.server_state, app_state=self.app_state)
            protocol.connection_made(self.transport)
            protocol.upgrade(request)
            self.transport.set_protocol(protocol)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self, seconds: float, callback: Callable[[], None]) -> None:
            self._disarm()
            self._timer = self.loop.call_later(seconds, callback)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _head_too_slow(self) -> None:
            self._timer = None
            bounds.on_head_timeout()
            self.transport.close()

        def _head_too_large(self) -> None:
            self._disarm()
            bounds.on_head_too_large()
            # Answered only when no response is under way: a 431 amid the previous request's
            # response would corrupt both.
            if self.cycle is None or self.cycle.response_complete:
                self._answer(431, "request head too large")
            self.transport.close()

        def _body_too_slow(self) -> None:
            self._timer = None
            bounds.on_body_timeout()
            cycle = self.cycle
            # A pipelined request waits for an earlier response, which is under way.
            answered = cycle.response_started or bool(self.pipeline)
            if not cycle.response_complete:
                # The application is still waiting for the body: it gets a disconnect, and
                # whatever it sends from now on is dropped rather than written after our answer.
                cycle.disconnected = True
                cycle.message_event.set()
            if not answered:
                self._answer(408, "request body not received in time")
            self.transport.close()

        def _answer(self, status: int, message: str) -> None:
            content = [STATUS_LINE[status]]
            for name, value in self.server_state.default_headers:
                content.extend([name, b": ", value, b"\r\n"])
            body = message.encode("ascii")
            content.extend(
                [
                    b"content-type: text/plain; charset=utf-8\r\n",
                    b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                    b"connection: close\r\n\r\n",
                    body,
                ]
            )
            self.transport.write(b"".join(content))

    return BoundedHttpProtocol


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
