"""One WebSocket session: handshake checks, authentication, resume and the reader loop.

The session reads the socket; what is written to it after the handshake goes through the
session's `Connection` (connection.py), which owns the writer.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import WebSocket

from .auth import AuthRefused, Handshake, Principal, TokenRequired
from .broker import BrokerUnavailable
from .connection import ABORTED, CloseRequest, Connection
from .forwarded import peer_host
from .node import BROKER_UNAVAILABLE, ReplayOverBudget
from .protocol import (
    BEARER_PREFIX,
    CLOSE_POLICY,
    CLOSE_RATE_LIMITED,
    CLOSE_SERVICE_RESTART,
    CLOSE_TOO_BIG,
    CLOSE_TRY_AGAIN_LATER,
    CLOSE_UNAUTHENTICATED,
    CLOSE_UNSUPPORTED_DATA,
    SUBPROTOCOL,
    Auth,
    ProtocolError,
    Resume,
    close_reason,
    decode_client_frame,
    encode,
)
from .ratelimit import TokenBucket
from .service import Service
from .transport import release, transport_of


class HandshakeRejected(Exception):
    def __init__(self, code: int, label: str, message: str):
        super().__init__(message)
        self.code = code
        self.label = label
        self.message = message


TOKEN_EXPIRED = CloseRequest(CLOSE_UNAUTHENTICATED, "token expired: reconnect with a fresh token", "token_expired")

# How many failed attempts one handshake may report: the reconnect metrics take the client's
# word, so one handshake must not be able to move them by more than a plausible backoff run.
MAX_REPORTED_ATTEMPTS = 100

# ASCII digits only: str.isdigit() also accepts superscripts and other scripts' digits, which
# int() refuses or reads as a number; 18 digits keep the value within a signed 64-bit offset
# and far below int()'s own digit limit.
_DECIMAL = re.compile(r"[0-9]{1,18}")


def request_headers(socket: WebSocket) -> tuple[dict[str, str], frozenset[str]]:
    """The handshake's headers by lower-case name, decoded as UTF-8 like all other text, a
    repeated header's values joined with commas as HTTP allows; and the names of the repeated
    ones. Read from the scope: `socket.headers` would build, and keep for the whole connection,
    a multi-dict of them. A value that is not UTF-8 is refused rather than decoded with
    replacement characters, which could make two different values name the same user."""
    headers: dict[str, str] = {}
    repeated: set[str] = set()
    for raw_name, raw_value in socket.scope["headers"]:
        # The HTTP parser admits only token characters (ASCII) in names.
        name = raw_name.decode("ascii").lower()
        try:
            value = raw_value.decode("utf-8")
        except UnicodeDecodeError:
            raise HandshakeRejected(CLOSE_POLICY, "bad_header", f"header {name[:60]} is not valid UTF-8") from None
        if name in headers:
            repeated.add(name)
            headers[name] = f"{headers[name]}, {value}"
        else:
            headers[name] = value
    return headers, frozenset(repeated)


def offered_subprotocols(socket: WebSocket) -> list[str]:
    return [entry for entry in socket.scope.get("subprotocols", ()) if entry]


def decimal_parameter(query: Mapping[str, str], name: str, label: str) -> int | None:
    """A non-negative integer handshake parameter, None when absent."""
    raw = query.get(name)
    if raw is None:
        return None
    if not _DECIMAL.fullmatch(raw):
        raise HandshakeRejected(
            CLOSE_POLICY, label, f"'{name}' must be a non-negative integer of at most 18 ASCII digits"
        )
    return int(raw)


def resume_request(query: Mapping[str, str]) -> tuple[int, str] | None:
    """The `since`/`epoch` handshake parameters, validated; None when the client did not resume."""
    since, epoch = decimal_parameter(query, "since", "bad_resume"), query.get("epoch")
    if since is None and epoch is None:
        return None
    if since is None or not epoch:
        raise HandshakeRejected(CLOSE_POLICY, "bad_resume", "resume needs both 'since' and 'epoch'")
    return since, epoch


def reconnect_attempts(query: Mapping[str, str]) -> int | None:
    """How many attempts failed before this reconnect, at most MAX_REPORTED_ATTEMPTS, or None
    if this is not a reconnect. A malformed count is refused whether or not this is a reconnect:
    it comes from a broken client."""
    attempts = decimal_parameter(query, "attempts", "bad_attempts")
    if query.get("reconnect") not in ("1", "true"):
        return None
    return min(attempts or 0, MAX_REPORTED_ATTEMPTS)


def read_handshake(socket: WebSocket, service: Service, offered: list[str]) -> Handshake:
    """What the plugins get to see of the handshake. Built again for a token refresh rather
    than kept: an idle connection should hold as little as possible. Raises HandshakeRejected
    for a header that is not UTF-8."""
    headers, repeated = request_headers(socket)
    query = dict(socket.query_params)
    token = next((p[len(BEARER_PREFIX) :] for p in offered if p.startswith(BEARER_PREFIX)), None)
    if token is None and service.settings.token_query_param:
        token = query.get("token")
    query.pop("token", None)  # never handed to plugins, never logged by them
    return Handshake(
        query=query,
        headers=headers,
        repeated=repeated,
        client_host=peer_host(socket.scope),
        token=token,
    )


@dataclass(frozen=True, slots=True)
class Admission:
    """A handshake that passed: who connected, from where they resume, and how many attempts
    failed before (None: not a reconnect)."""

    principal: Principal
    resume: tuple[int, str] | None
    attempts: int | None


async def run_session(socket: WebSocket) -> None:
    """One WebSocket from its handshake to its end: the /ws handler.

    While a connection is idle, this coroutine's frame is the only one of TaskSync's on its
    stack, and the stack is paid for by every socket: admission, stream opening and the handling
    of each message are calls that return, not frames that stay."""
    service: Service = socket.app.state.service
    room = service.claim_socket_slot()
    try:
        admission = await _admit(socket, service, room)
        if admission is None:
            return
        conn = _admitted(socket, service, admission)
        try:
            await service.node.register(conn)
            await _open_stream(conn, service, admission.resume, first=True)
            limits = service.limits
            bucket = TokenBucket(limits.inbound_messages_per_second, limits.inbound_burst)
            # Straight from the transport: Litestar's receive wrapper would be one more frame on
            # the stack of every idle connection, and only tracks what this loop already knows.
            while (message := await conn.transport.receive())["type"] != "websocket.disconnect":
                work = _on_message(socket, conn, service, bucket, message)
                if work is not None:
                    await work
        except asyncio.CancelledError:
            # An aborted connection's transport (AsgiTransport) ends it by cancelling the
            # session; any other cancellation (server shutdown) goes on up.
            if conn.state is not ABORTED:
                raise
        finally:
            writer = conn.end()
            if writer is not None:
                writer.cancel()
                # The writer ends with the socket, however it ended (cancelled, or the peer gone
                # in mid-send); none of that may skip the bookkeeping below.
                await asyncio.gather(writer, return_exceptions=True)
            await service.node.unregister(conn)
            service.metrics.count_connection_closed(conn.close_label)
    finally:
        if room:
            service.release_socket_slot()
        release(socket)


async def _admit(socket: WebSocket, service: Service, room: bool) -> Admission | None:
    """Check, accept and authenticate a handshake; None once it has been refused and closed.
    `room`: whether the socket got a place in the process connection limit."""
    metrics = service.metrics
    offered = offered_subprotocols(socket)
    subprotocol = SUBPROTOCOL if SUBPROTOCOL in offered else None
    principal: Principal | None = None
    try:
        handshake = read_handshake(socket, service, offered)
        if not service.origins.allows(handshake.headers.get("origin")):
            # Refused before the upgrade: the browser gets HTTP 403 and the page nothing at all.
            metrics.handshakes_refused.labels("origin").inc()
            await socket.close()
            return None
        if service.draining:
            raise HandshakeRejected(CLOSE_SERVICE_RESTART, "draining", "service restarting: connect to another replica")
        if not room:
            raise HandshakeRejected(CLOSE_TRY_AGAIN_LATER, "process_limit", "server full: try again later")
        if offered and subprotocol is None:
            raise HandshakeRejected(CLOSE_POLICY, "subprotocol", f"unsupported subprotocol: offer {SUBPROTOCOL}")
        resume = resume_request(handshake.query)
        attempts = reconnect_attempts(handshake.query)
        try:
            principal = await service.plugins.authenticate(handshake)
        except TokenRequired:
            pass  # accepted below; the token must come in the first frame
        except AuthRefused as refused:
            metrics.auth_failures.labels(refused.reason).inc()
            raise HandshakeRejected(refused.code, refused.reason, refused.message) from None
    except HandshakeRejected as rejected:
        metrics.handshakes_refused.labels(rejected.label).inc()
        # Accept first so the client sees the close code and reason rather than a bare HTTP 403.
        await socket.accept(subprotocols=subprotocol)
        await socket.close(rejected.code, close_reason(rejected.message))
        return None

    await socket.accept(subprotocols=subprotocol)
    if principal is None:
        principal = await _first_frame_auth(socket, service, handshake)
        if principal is None:
            return None
    if len(service.node.hub.connections_of(principal.user_id)) >= service.limits.max_connections_per_user:
        # The newest connection is refused, not the oldest evicted: evicting would make two
        # over-limit tabs knock each other out forever as each reconnects.
        metrics.handshakes_refused.labels("user_limit").inc()
        limit = service.limits.max_connections_per_user
        await socket.close(CLOSE_RATE_LIMITED, close_reason(f"too many connections for this user (limit {limit})"))
        return None
    return Admission(principal, resume, attempts)


def _admitted(socket: WebSocket, service: Service, admission: Admission) -> Connection:
    """Count an admitted connection and create its delivery state, closing when its credential
    expires."""
    metrics = service.metrics
    principal, attempts = admission.principal, admission.attempts
    if attempts is None:
        metrics.connections_opened_new.inc()
    else:
        metrics.connections_opened_reconnect.inc()
        metrics.reconnects.inc()
        metrics.reconnect_failed_attempts.inc(attempts)
    conn = Connection(principal.user_id, service.settings.outbox_size, transport_of(socket), metrics)
    conn.close_at(principal.expires_at, TOKEN_EXPIRED)
    return conn


async def _first_frame_auth(socket: WebSocket, service: Service, handshake: Handshake) -> Principal | None:
    """Wait for an `auth` frame as the first frame; the principal, or None after closing."""
    metrics = service.metrics
    timeout = service.settings.auth_message_timeout
    try:
        async with asyncio.timeout(timeout):
            message = await socket.receive()
    except TimeoutError:
        await _refuse(socket, service, "auth_timeout", f"no auth frame within {timeout:g}s")
        return None
    if message["type"] == "websocket.disconnect":
        return None
    text = message.get("text")
    if not isinstance(text, str) or len(text) > service.limits.max_frame_bytes:
        await _refuse(socket, service, "bad_auth_frame", "expected an auth frame first")
        return None
    try:
        frame = decode_client_frame(text)
    except ProtocolError:
        frame = None
    if not isinstance(frame, Auth):
        await _refuse(socket, service, "bad_auth_frame", "expected an auth frame first")
        return None
    try:
        return await service.plugins.authenticate(msgspec.structs.replace(handshake, token=frame.token))
    except AuthRefused as refused:
        metrics.auth_failures.labels(refused.reason).inc()
        await socket.close(refused.code, close_reason(refused.message))
        return None


async def _refuse(socket: WebSocket, service: Service, reason: str, message: str) -> None:
    service.metrics.auth_failures.labels(reason).inc()
    await socket.close(CLOSE_UNAUTHENTICATED, close_reason(message))


def _on_message(
    socket: WebSocket,
    conn: Connection,
    service: Service,
    bucket: TokenBucket,
    message: Mapping[str, Any],
) -> Awaitable[None] | None:
    """Handle one message from the client; what must be awaited (a resume, a token refresh) is
    returned for the session to await."""
    if not conn.is_open:
        return None  # frames after we asked to close are read and ignored until the close completes
    metrics = service.metrics
    text = message.get("text")
    if not isinstance(text, str):
        metrics.client_frames_rejected.labels("binary").inc()
        conn.request_close(CloseRequest(CLOSE_UNSUPPORTED_DATA, "binary frames are not supported", "unsupported_data"))
        return None
    if not bucket.allow():
        metrics.rate_limited.labels("inbound").inc()
        conn.request_close(CloseRequest(CLOSE_RATE_LIMITED, "too many messages: slow down", "rate_limited"))
        return None
    limit = service.limits.max_frame_bytes
    if len(text) > limit or (len(text) * 4 > limit and len(text.encode()) > limit):
        metrics.client_frames_rejected.labels("too_big").inc()
        conn.request_close(CloseRequest(CLOSE_TOO_BIG, f"frame larger than {limit} bytes", "too_big"))
        return None
    try:
        frame = decode_client_frame(text)
    except ProtocolError as error:
        metrics.client_frames_rejected.labels(error.code).inc()
        conn.offer(encode(error.to_frame()))
        return None
    if isinstance(frame, Resume):
        conn.begin_replay()
        return _open_stream(conn, service, (frame.since, frame.epoch), first=False)
    if isinstance(frame, Auth):
        # The same headers that passed at the handshake: read again, they cannot fail now.
        handshake = read_handshake(socket, service, offered_subprotocols(socket))
        return _refresh(conn, service, msgspec.structs.replace(handshake, token=frame.token))
    return None  # a pong needs no answer: any inbound frame already proves the client is alive


async def _open_stream(conn: Connection, service: Service, resume: tuple[int, str] | None, *, first: bool) -> None:
    """Open or resume a client's stream; a connection whose stream cannot go on is asked to
    close, with a code that tells the client when to come back."""
    try:
        if resume is None:
            await service.node.open_stream(conn, resume, first=first)
        else:
            async with service.replay_slots:
                await service.node.open_stream(conn, resume, first=first)
    except BrokerUnavailable:
        conn.request_close(BROKER_UNAVAILABLE)
    except ReplayOverBudget:
        service.metrics.rate_limited.labels("replay").inc()
        conn.request_close(
            CloseRequest(CLOSE_RATE_LIMITED, "too many events replayed: resume less often", "rate_limited")
        )


async def _refresh(conn: Connection, service: Service, handshake: Handshake) -> None:
    """An in-band token refresh: same user, new expiry; anything else ends the connection."""
    try:
        principal = await service.plugins.authenticate(handshake)
    except AuthRefused as refused:
        service.metrics.auth_failures.labels(refused.reason).inc()
        conn.request_close(CloseRequest(refused.code, refused.message, "unauthenticated"))
        return
    if principal.user_id != conn.user_id:
        service.metrics.auth_failures.labels("user_mismatch").inc()
        conn.request_close(CloseRequest(CLOSE_UNAUTHENTICATED, "refreshed token names another user", "unauthenticated"))
        return
    conn.close_at(principal.expires_at, TOKEN_EXPIRED)
