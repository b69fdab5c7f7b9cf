"""The transport adaptations without sockets: the single-consumer stand-ins `WebSocketProtocol`
gives uvicorn's protocol, its backpressure on a peer that does not read, the bounds
`http_protocol()` puts on a request's head and body, and the upgrade request handed to the
handshake as read."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import pytest
import uvicorn
import websockets.http11
from uvicorn.server import ServerState
from websockets.http11 import Request, parse_headers
from websockets.server import ServerProtocol

from tasksync.protocol import text_frame
from tasksync.transport import (
    SERVER_WIDE,
    ReceiveQueue,
    RequestBounds,
    WritableFlag,
    handshake_request,
    http_protocol,
    websocket_protocol,
)
from tests.support.waiting import eventually


async def test_receive_queue_hands_over_in_order_and_wakes_a_waiting_consumer():
    queue = ReceiveQueue()
    queue.put_nowait(1)
    queue.put_nowait(2)
    assert not queue.empty()
    assert [await queue.get(), await queue.get()] == [1, 2]
    assert queue.empty()
    waiting = asyncio.create_task(queue.get())
    await asyncio.sleep(0)  # one turn of the loop, not a wait: the task runs up to its first await
    assert not waiting.done()
    queue.put_nowait(3)
    assert await asyncio.wait_for(waiting, 1) == 3


async def test_a_cancelled_get_loses_nothing():
    queue = ReceiveQueue()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await queue.get()
    queue.put_nowait("kept")
    assert await asyncio.wait_for(queue.get(), 1) == "kept"


async def test_writable_flag_lets_sends_through_until_cleared_and_wakes_every_waiter():
    flag = WritableFlag()
    assert flag.is_set()
    await asyncio.wait_for(flag.wait(), 1)  # set: returns at once
    flag.clear()
    waiters = [asyncio.create_task(flag.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    flag.set()
    await asyncio.wait_for(asyncio.gather(*waiters), 1)


async def test_writable_flag_tells_whether_a_send_is_waiting():
    flag = WritableFlag()
    assert not flag.has_waiters()
    flag.clear()
    waiting = asyncio.create_task(flag.wait())
    await asyncio.sleep(0)
    assert flag.has_waiters()
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    assert not flag.has_waiters()  # a cancelled send waits no longer


# -- the protocols, on a transport that records what they do to it ----------------------------


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.reading = True
        self.closed = False
        self.aborted = False
        self.protocol: asyncio.BaseProtocol | None = None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 8005) if name in ("sockname", "peername") else default

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self.protocol is not None
        return self.protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol


class Counts:
    def __init__(self) -> None:
        self.values: dict[str, int] = {}

    def counter(self, name: str) -> Callable[[], None]:
        def inc() -> None:
            self.values[name] = self.values.get(name, 0) + 1

        return inc


async def _echo_body_length(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    body = b""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    answer = str(len(body)).encode()
    headers = [(b"content-length", str(len(answer)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


def _http(
    counts: Counts,
    *,
    max_head_bytes: int = 4096,
    body_timeout: float = 10.0,
    app: Callable[..., Any] = _echo_body_length,
    **config: Any,
) -> tuple[Any, RecordingTransport]:
    bounds = RequestBounds(
        head_timeout=10.0,
        max_head_bytes=max_head_bytes,
        body_timeout=body_timeout,
        on_head_timeout=counts.counter("head_timeout"),
        on_head_too_large=counts.counter("head_too_large"),
        on_body_timeout=counts.counter("body_timeout"),
    )
    loaded = uvicorn.Config(app, lifespan="off", proxy_headers=False, log_level="warning", **config)
    loaded.load()
    protocol = http_protocol(bounds)(config=loaded, server_state=ServerState(), app_state={})  # type: ignore[call-arg]
    transport = RecordingTransport()
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    return protocol, transport


def _head(total: int) -> bytes:
    """A GET request head of exactly `total` bytes."""
    start, end = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: ", b"\r\n\r\n"
    return start + b"p" * (total - len(start) - len(end)) + end


async def _answered(transport: RecordingTransport, count: int = 1) -> list[bytes]:
    await eventually(lambda: transport.written.count(b"HTTP/1.1 ") >= count, timeout=5, what="the answer")
    return re.findall(rb"HTTP/1\.1 \d{3} [^\r]*", transport.written)


@pytest.mark.parametrize("read_size", [1 << 20, 1000, 1])
@pytest.mark.parametrize(
    ("size", "status", "refused"),
    [(4096, b"HTTP/1.1 200 OK", False), (4097, b"HTTP/1.1 431 Request Header Fields Too Large", True)],
)
async def test_a_head_at_the_cap_is_served_and_one_byte_more_is_refused_431(read_size, size, status, refused):
    counts = Counts()
    protocol, transport = _http(counts, max_head_bytes=4096)
    head = _head(size)
    for offset in range(0, len(head), read_size):
        if transport.is_closing():
            break
        protocol.data_received(head[offset : offset + read_size])
    assert await _answered(transport) == [status]
    assert transport.closed == refused
    assert counts.values == ({"head_too_large": 1} if refused else {})
    protocol.connection_lost(None)


async def test_the_head_cap_counts_neither_the_body_nor_earlier_requests():
    counts = Counts()
    protocol, transport = _http(counts)
    body = b"b" * 100_000
    post = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + body
    # A body far over the cap, read with its head; then two heads of three quarters of the cap
    # each on the same kept-alive connection.
    protocol.data_received(post)
    assert await _answered(transport) == [b"HTTP/1.1 200 OK"]
    for n in (2, 3):
        protocol.data_received(_head(3072))
        assert len(await _answered(transport, n)) == n
    assert not transport.closed and counts.values == {}
    protocol.connection_lost(None)


async def test_a_body_not_received_within_the_deadline_is_answered_408_and_closed():
    counts = Counts()
    protocol, transport = _http(counts, body_timeout=0.05)
    protocol.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345")
    assert await _answered(transport) == [b"HTTP/1.1 408 Request Timeout"]
    assert transport.closed and counts.values == {"body_timeout": 1}
    protocol.connection_lost(None)
    # The application got a disconnect and wrote nothing after the 408.
    await eventually(lambda: not protocol.server_state.tasks, timeout=5, what="the request task to end")
    assert transport.written.count(b"HTTP/1.1 ") == 1


async def test_a_complete_body_disarms_the_deadline():
    counts = Counts()
    protocol, transport = _http(counts, body_timeout=0.05)
    protocol.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n1234567890")
    assert await _answered(transport) == [b"HTTP/1.1 200 OK"]
    assert protocol._timer is None
    assert not transport.closed and counts.values == {}
    protocol.connection_lost(None)


def _websocket(counts: Counts, send_timeout: float) -> tuple[Any, RecordingTransport]:
    config = uvicorn.Config(_echo_body_length, lifespan="off", log_level="warning")
    config.load()
    protocol = websocket_protocol(send_timeout, counts.counter("write_stalled"), counts.counter("keepalive_timeout"))(
        config=config, server_state=ServerState(), app_state={}
    )
    transport = RecordingTransport()
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    return protocol, transport


async def test_a_full_write_buffer_stops_reading_until_it_drains_whatever_uvicorn_resumes():
    protocol, transport = _websocket(Counts(), send_timeout=60)
    protocol.pause_writing()
    assert not transport.reading
    # uvicorn resumes reading once the app takes a message it had paused for: still held.
    protocol.read_paused = True
    protocol.queue.put_nowait({"type": "websocket.receive", "text": "x"})
    await protocol.receive()
    assert not transport.reading
    protocol.resume_writing()
    assert transport.reading
    # Its own pause outlasts a drained buffer: the app has not taken the message yet.
    protocol.read_paused = True
    transport.pause_reading()
    protocol.pause_writing()
    protocol.resume_writing()
    assert not transport.reading
    protocol.connection_lost(None)


async def test_a_peer_that_reads_nothing_is_aborted_after_the_send_timeout():
    counts = Counts()
    protocol, transport = _websocket(counts, send_timeout=0.05)
    protocol.pause_writing()
    await eventually(lambda: transport.aborted, timeout=5, what="the abort")
    assert counts.values == {"write_stalled": 1}
    protocol.connection_lost(None)


async def test_a_drained_buffer_cancels_the_abort():
    counts = Counts()
    protocol, transport = _websocket(counts, send_timeout=0.05)
    protocol.pause_writing()
    protocol.resume_writing()
    assert protocol._stall_timer is None and not transport.aborted
    protocol.connection_lost(None)


async def test_a_stuck_send_leaves_the_session_its_window_before_the_backstop():
    counts = Counts()
    protocol, transport = _websocket(counts, send_timeout=0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    protocol.pause_writing()
    waiting = asyncio.create_task(protocol.writable.wait())  # a send of the session's
    await eventually(lambda: transport.aborted, timeout=5, what="the backstop abort")
    # The session's stall watch acts within one more timeout; the backstop waits two.
    assert loop.time() - started >= 3 * 0.2 * 0.9
    assert counts.values == {"write_stalled": 1}
    protocol.connection_lost(None)
    await asyncio.wait_for(waiting, 1)


# -- write_now: what a delivery may write straight to the transport ----------------------------


async def _accept_and_wait(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while (await receive())["type"] != "websocket.disconnect":
        pass


UPGRADE = [
    (b"host", b"localhost:8000"),
    (b"upgrade", b"websocket"),
    (b"connection", b"Upgrade"),
    (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
    (b"sec-websocket-version", b"13"),
]


def _written_out(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    """The request as uvicorn writes it out for the websockets parser."""
    lines = [method + b" " + target + b" HTTP/1.1"] + [name + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _upgraded(extensions: str = "", app: Callable[..., Any] = _accept_and_wait) -> tuple[Any, RecordingTransport]:
    """A WebSocket protocol that has been sent a handshake request for `app`."""
    config = uvicorn.Config(app, lifespan="off", log_level="warning")
    config.load()
    protocol = websocket_protocol(60, lambda: None)(config=config, server_state=ServerState(), app_state={})
    transport = RecordingTransport()
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    offered = [(b"sec-websocket-extensions", extensions.encode())] if extensions else []
    protocol.data_received(_written_out(b"GET", b"/ws", [*UPGRADE, *offered]))
    return protocol, transport


def _wrote(protocol: Any, transport: RecordingTransport, text: str) -> bytes | None:
    """What one write_now of `text` put on the transport, or None if it refused."""
    before = len(transport.written)
    if not protocol.write_now(text, text_frame(text)):
        assert len(transport.written) == before
        return None
    return bytes(transport.written[before:])


async def test_write_now_writes_only_between_the_answered_handshake_and_the_close_and_never_while_paused():
    protocol, transport = _upgraded()
    assert _wrote(protocol, transport, "early") is None
    await eventually(lambda: protocol.handshake_complete, timeout=5, what="the accept")
    assert _wrote(protocol, transport, "live") == text_frame("live")
    protocol.pause_writing()
    assert _wrote(protocol, transport, "paused") is None
    protocol.resume_writing()
    assert _wrote(protocol, transport, "resumed") == text_frame("resumed")
    await protocol.send({"type": "websocket.close", "code": 1000})
    assert protocol.close_sent
    assert _wrote(protocol, transport, "after close") is None
    protocol.connection_lost(None)
    assert _wrote(protocol, transport, "after loss") is None


async def test_write_now_refuses_once_the_transport_is_closing():
    protocol, transport = _upgraded()
    await eventually(lambda: protocol.handshake_complete, timeout=5, what="the accept")
    transport.close()  # as uvicorn does after answering a peer's close frame, without close_sent
    assert _wrote(protocol, transport, "late") is None
    protocol.connection_lost(None)


async def test_write_now_compresses_each_frame_when_permessage_deflate_was_negotiated():
    protocol, transport = _upgraded("permessage-deflate")
    await eventually(lambda: protocol.handshake_complete, timeout=5, what="the accept")
    assert protocol.conn.extensions
    written = _wrote(protocol, transport, "x" * 200)
    assert written is not None and written != text_frame("x" * 200)
    assert written[0] & 0x40  # RSV1: a compressed message
    protocol.connection_lost(None)


# -- what an idle connection's protocol holds -----------------------------------------------------


async def test_an_answered_connection_holds_few_enough_attributes_to_share_its_classs_key_table():
    protocol, _ = _upgraded()
    await eventually(lambda: protocol.handshake_complete, timeout=5, what="the accept")
    # CPython shares an instance's attribute keys with its class up to 29 of them; with more,
    # every connection holds a full dict of its own (1.6 KiB instead of 0.3).
    own = vars(protocol)
    assert len(own) < 30, sorted(own)
    assert not set(SERVER_WIDE) & set(own)
    # uvicorn's reads of what its server shares are answered from the class.
    assert protocol.loop is asyncio.get_running_loop()
    assert protocol.app is protocol.config.loaded_app
    assert protocol in protocol.connections
    protocol.connection_lost(None)


async def test_a_protocol_class_serves_one_server_only():
    def loaded_config() -> uvicorn.Config:
        config = uvicorn.Config(_accept_and_wait, lifespan="off", log_level="warning")
        config.load()
        return config

    protocol_class = websocket_protocol(60, lambda: None)
    config, server_state, app_state = loaded_config(), ServerState(), {}
    for _ in range(2):  # connections of one server share every server-wide value
        protocol_class(config=config, server_state=server_state, app_state=app_state)
    with pytest.raises(RuntimeError, match="one protocol class serves two servers: their config differ"):
        protocol_class(config=loaded_config(), server_state=server_state, app_state=app_state)


async def test_an_unanswered_keepalive_ping_is_counted_once_and_not_on_a_closing_connection():
    counts = Counts()
    protocol, transport = _websocket(counts, send_timeout=60)
    protocol.keepalive_timeout()
    assert counts.values == {"keepalive_timeout": 1}
    assert protocol.close_sent and transport.closed
    protocol.keepalive_timeout()  # already closing: uvicorn does nothing, and nothing is counted
    assert counts.values == {"keepalive_timeout": 1}
    protocol.connection_lost(None)


async def test_a_handshake_the_server_s_shutdown_answered_takes_the_application_s_refusal_quietly():
    """uvicorn's shutdown answers a handshake the application has not answered yet with 500 and
    closes; a refusal the application sends after that (accept, then close with a code, as a
    draining TaskSync does) must not write a second answer, which websockets refuses with an
    AssertionError logged as an application error."""
    deciding, decided = asyncio.Event(), asyncio.Event()
    outcome: list[Exception | None] = []

    async def refuse_once_decided(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        await receive()  # websocket.connect
        deciding.set()
        await decided.wait()
        try:
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": 1012, "reason": "draining"})
        except Exception as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    protocol, transport = _upgraded(app=refuse_once_decided)
    await asyncio.wait_for(deciding.wait(), 5)
    protocol.shutdown()
    decided.set()
    await eventually(lambda: outcome, timeout=5, what="the application's refusal")
    assert outcome == [None]
    assert bytes(transport.written).startswith(b"HTTP/1.1 500 ")
    assert bytes(transport.written).count(b"HTTP/1.1 ") == 1
    protocol.connection_lost(None)


# -- the upgrade request, read once -------------------------------------------------------------


def _websockets_reads(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]) -> Request | None:
    """The request the websockets parser reads from those bytes; None when it refuses them."""
    parser = ServerProtocol()
    parser.receive_data(_written_out(method, target, headers))
    requests = [event for event in parser.events_received() if isinstance(event, Request)]
    return None if parser.handshake_exc is not None or not requests else requests[0]


def _as_read(request: Request | None) -> tuple[Any, ...] | None:
    if request is None:
        return None
    return request.method, request.path, request.protocol, list(request.headers.raw_items())


LINE = 8192  # the websockets parser's limit on a line, CRLF included
# (target, headers, whether the request is handed over as read, not left to the websockets parser)
REQUESTS: dict[str, tuple[bytes, list[tuple[bytes, bytes]], bool]] = {
    "a browser's": (
        b"/ws?since=41&epoch=e1",
        [*UPGRADE, (b"origin", b"https://app.example.com"), (b"sec-websocket-protocol", b"tasksync.v1, bearer.x.y.z")],
        True,
    ),
    "values in ISO-8859-1, with tabs and spaces around": (
        b"/ws",
        [*UPGRADE, (b"x-name", b" \tcaf\xe9 au lait\t ")],
        True,
    ),
    "a header line at the limit": (b"/ws", [*UPGRADE, (b"x-pad", b"p" * (LINE - len(b"x-pad: \r\n")))], True),
    "a header line over the limit (431)": (
        b"/ws",
        [*UPGRADE, (b"x-pad", b"p" * (LINE - len(b"x-pad: \r\n") + 1))],
        False,
    ),
    "a request line at the limit": (b"/" + b"q" * (LINE - len(b"GET / HTTP/1.1\r\n")), UPGRADE, True),
    "a request line over the limit (414)": (b"/" + b"q" * (LINE - len(b"GET / HTTP/1.1\r\n") + 1), UPGRADE, False),
    "as many headers as allowed": (b"/ws", [*UPGRADE, *[(b"x-%d" % i, b"v") for i in range(128 - len(UPGRADE))]], True),
    "one header too many (431)": (b"/ws", [*UPGRADE, *[(b"x-%d" % i, b"v") for i in range(129 - len(UPGRADE))]], False),
    "a control character in a value": (b"/ws", [*UPGRADE, (b"x-bad", b"a\x01b")], False),
    "a name that is not a token": (b"/ws", [*UPGRADE, (b"x(bad)", b"v")], False),
    "a target that is not ASCII": (b"/ws?caf\xc3\xa9", UPGRADE, False),
    "a chunked body": (b"/ws", [*UPGRADE, (b"transfer-encoding", b"chunked")], False),
    "an empty body announced": (b"/ws", [*UPGRADE, (b"content-length", b"0")], False),
}


@pytest.mark.parametrize("case", REQUESTS)
def test_the_upgrade_request_handed_over_is_the_one_the_websockets_parser_reads(case):
    target, headers, handed_over = REQUESTS[case]
    built = handshake_request(b"GET", target, headers)
    assert (built is not None) is handed_over
    if built is not None:
        assert _as_read(built) == _as_read(_websockets_reads(b"GET", target, headers))


def test_whatever_the_websockets_parser_refuses_is_left_to_it():
    refused = [
        case for case, (target, headers, _) in REQUESTS.items() if not _websockets_reads(b"GET", target, headers)
    ]
    assert len(refused) >= 6  # the list above does reach the parser's refusals
    for case in refused:
        target, headers, _ = REQUESTS[case]
        assert handshake_request(b"GET", target, headers) is None, case


def _http_upgrading(app: Callable[..., Any]) -> tuple[Any, RecordingTransport]:
    return _http(Counts(), max_head_bytes=32_768, app=app, ws=websocket_protocol(60, lambda: None))


def _masked_text_frame(text: bytes) -> bytes:
    mask = b"\x01\x02\x03\x04"
    return bytes([0x81, 0x80 | len(text)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(text))


async def test_an_upgrade_is_answered_and_its_frames_read_without_the_request_being_parsed_again(monkeypatch):
    # The websockets parser's request parser starts with each connection and waits for a request
    # line; it reads the headers only once it has one.
    parsed_again: list[bool] = []

    def recording_parse_headers(read_line: Any) -> Any:
        parsed_again.append(True)
        return (yield from parse_headers(read_line))

    monkeypatch.setattr(websockets.http11, "parse_headers", recording_parse_headers)
    received: list[Any] = []

    async def accept_and_record(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        received.append((await receive())["type"])
        await send({"type": "websocket.accept", "subprotocol": "tasksync.v1"})
        while (message := await receive())["type"] != "websocket.disconnect":
            received.append(message["text"])

    protocol, transport = _http_upgrading(accept_and_record)
    request = _written_out(b"GET", b"/ws?user_id=u1", [*UPGRADE, (b"sec-websocket-protocol", b"tasksync.v1")])
    protocol.data_received(request)
    answered = await _answered(transport)
    assert answered == [b"HTTP/1.1 101 Switching Protocols"]
    assert b"\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in transport.written
    assert b"\r\nSec-WebSocket-Protocol: tasksync.v1\r\n" in transport.written
    upgraded = transport.get_protocol()
    assert upgraded is not protocol
    assert upgraded.scope["path"] == "/ws" and upgraded.scope["query_string"] == b"user_id=u1"
    upgraded.data_received(_masked_text_frame(b"hello"))
    await eventually(lambda: received == ["websocket.connect", "hello"], timeout=5, what="the frame")
    assert parsed_again == []
    upgraded.connection_lost(None)


async def test_an_upgrade_the_websockets_parser_must_answer_still_gets_its_answer():
    protocol, transport = _http_upgrading(_accept_and_wait)
    too_many = [*UPGRADE, *[(b"x-%d" % i, b"v") for i in range(129 - len(UPGRADE))]]
    protocol.data_received(_written_out(b"GET", b"/ws", too_many))
    assert await _answered(transport) == [b"HTTP/1.1 431 Request Header Fields Too Large"]
    assert transport.closed
