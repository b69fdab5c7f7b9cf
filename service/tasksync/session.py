"""One WebSocket session: handshake, resume, the reader loop and the writer task.

The session owns the socket. The hub only ever puts frames into the connection's outbox; the
writer here is the one place that awaits the socket for sending.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from litestar import WebSocket

from .auth import AuthRefused, Handshake
from .broker import BrokerUnavailable, Delivery, Position
from .hub import CloseRequest, Connection
from .protocol import (
    BEARER_PREFIX,
    CLOSE_POLICY,
    CLOSE_SERVICE_RESTART,
    CLOSE_TOO_BIG,
    CLOSE_TRY_AGAIN_LATER,
    CLOSE_UNSUPPORTED_DATA,
    SUBPROTOCOL,
    Auth,
    Connected,
    Error,
    ProtocolError,
    Resume,
    ResyncRequired,
    close_reason,
    decode_client_frame,
    encode,
)
from .service import Service
from .transport import TRANSPORT_ABORT_KEY

log = logging.getLogger("tasksync.session")


class HandshakeRejected(Exception):
    def __init__(self, code: int, label: str, message: str):
        super().__init__(message)
        self.code = code
        self.label = label
        self.message = message


def offered_subprotocols(socket: WebSocket) -> list[str]:
    header = socket.headers.get("sec-websocket-protocol", "")
    return [entry.strip() for entry in header.split(",") if entry.strip()]


def resume_request(query: dict[str, str]) -> tuple[int, str] | None:
    """The `since`/`epoch` handshake parameters, validated; None when the client did not resume."""
    since, epoch = query.get("since"), query.get("epoch")
    if since is None and epoch is None:
        return None
    if since is None or not epoch:
        raise HandshakeRejected(CLOSE_POLICY, "bad_resume", "resume needs both 'since' and 'epoch'")
    if not since.isdigit() or len(since) > 18:
        raise HandshakeRejected(CLOSE_POLICY, "bad_resume", "'since' must be a non-negative integer")
    return int(since), epoch


def reconnect_attempts(query: dict[str, str]) -> int | None:
    """How many attempts failed before this reconnect, or None if this is not a reconnect."""
    if query.get("reconnect") not in ("1", "true"):
        return None
    attempts = query.get("attempts", "0")
    return min(int(attempts), 1000) if attempts.isdigit() else 0


async def run_session(socket: WebSocket, service: Service) -> None:
    metrics = service.metrics
    offered = offered_subprotocols(socket)
    subprotocol = SUBPROTOCOL if SUBPROTOCOL in offered else None
    token = next((p[len(BEARER_PREFIX):] for p in offered if p.startswith(BEARER_PREFIX)), None)
    query = dict(socket.query_params)
    try:
        if service.draining:
            raise HandshakeRejected(CLOSE_SERVICE_RESTART, "draining", "service restarting: connect to another replica")
        if offered and subprotocol is None:
            raise HandshakeRejected(CLOSE_POLICY, "subprotocol", f"unsupported subprotocol: offer {SUBPROTOCOL}")
        resume = resume_request(query)
        handshake = Handshake(
            query=query,
            headers=dict(socket.headers),
            client_host=socket.client.host if socket.client else None,
            subprotocol_token=token,
        )
        try:
            principal = await service.authenticator.authenticate(handshake)
        except AuthRefused as refused:
            raise HandshakeRejected(refused.code, refused.reason, refused.message) from None
    except HandshakeRejected as rejected:
        metrics.handshakes_refused.labels(rejected.label).inc()
        # Accept first so the client sees the close code and reason rather than a bare HTTP 403.
        await socket.accept(subprotocols=subprotocol)
        await socket.close(rejected.code, close_reason(rejected.message))
        return

    await socket.accept(subprotocols=subprotocol)
    attempts = reconnect_attempts(query)
    metrics.connections_opened.labels("new" if attempts is None else "reconnect").inc()
    if attempts is not None:
        metrics.reconnects.inc()
        metrics.reconnect_failed_attempts.inc(attempts)

    conn = Connection(principal.user_id, service.settings.outbox_size)
    writer = asyncio.create_task(_write(socket, conn, service))
    conn.abort = _aborter(socket, asyncio.current_task())
    try:
        if service.hub.add(conn):
            await service.broker.watch(conn.user_id)
        try:
            await _open_stream(conn, service, resume, first=True)
        except BrokerUnavailable:
            # Without offsets the stream cannot start honestly; the client retries with backoff.
            conn.request_close(CloseRequest(CLOSE_TRY_AGAIN_LATER, "broker unavailable; try again later", "broker_unavailable"))
        await _read(socket, conn, service)
    except asyncio.CancelledError:
        if conn.closing is None or conn.closing.label != "stalled":
            raise  # a cancellation that is not our own abort (server shutdown) goes on up
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        if service.hub.remove(conn):
            await service.broker.unwatch(conn.user_id)
        label = conn.closing.label if conn.closing else "client"
        metrics.connections_closed.labels(label).inc()


async def _open_stream(conn: Connection, service: Service, resume: tuple[int, str] | None, *, first: bool) -> None:
    """Queue `connected` (first time only), then any resync notice and replay, then release
    the live deliveries held while this ran. Nothing is awaited between the replay and the
    release, so no live event can slip between them."""
    broker = service.broker
    replayed: list[Delivery] = []
    resync = None
    if resume is None:
        position = await broker.position(conn.user_id)
    else:
        replay = await broker.replay(conn.user_id, *resume)
        position, resync, replayed = replay.position, replay.resync, replay.deliveries
    if first:
        conn.outbox.offer(
            encode(
                Connected(
                    user_id=conn.user_id,
                    connection_id=conn.id,
                    seq=position.seq,
                    epoch=position.epoch,
                    heartbeat_interval=service.settings.heartbeat_interval,
                    resumed=resume is not None and resync is None,
                )
            )
        )
    if resume is not None:
        service.metrics.resume_outcomes.labels("resync" if resync else "recovered").inc()
    if resync is not None:
        conn.outbox.offer(encode(ResyncRequired(reason=resync, seq=position.seq, epoch=position.epoch)))
    ok = all(conn.outbox.offer(d) for d in replayed)
    if not (conn.end_replay(_last_seq(replayed, position)) and ok):
        service.hub.close_slow_consumer(conn)


def _last_seq(replayed: list[Delivery], position: Position) -> int:
    return replayed[-1].seq if replayed else position.seq


async def _read(socket: WebSocket, conn: Connection, service: Service) -> None:
    metrics = service.metrics
    while True:
        message = await socket.receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is None:
            metrics.client_frames_rejected.labels("binary").inc()
            conn.request_close(CloseRequest(CLOSE_UNSUPPORTED_DATA, "binary frames are not supported", "unsupported_data"))
            continue
        if conn.closing is not None:
            continue  # frames after we asked to close are read and ignored until the close completes
        limit = service.limits.max_frame_bytes
        if len(text) > limit or (len(text) * 4 > limit and len(text.encode()) > limit):
            metrics.client_frames_rejected.labels("too_big").inc()
            conn.request_close(CloseRequest(CLOSE_TOO_BIG, f"frame larger than {limit} bytes", "too_big"))
            continue
        try:
            frame = decode_client_frame(text)
        except ProtocolError as error:
            metrics.client_frames_rejected.labels(error.code).inc()
            conn.outbox.offer(encode(error.to_frame()))
            continue
        if isinstance(frame, Resume):
            conn.begin_replay()
            try:
                await _open_stream(conn, service, (frame.since, frame.epoch), first=False)
            except BrokerUnavailable:
                conn.request_close(CloseRequest(CLOSE_TRY_AGAIN_LATER, "broker unavailable; try again later", "broker_unavailable"))
        elif isinstance(frame, Auth):
            metrics.client_frames_rejected.labels("auth_unsupported").inc()
            conn.outbox.offer(
                encode(Error(code="invalid_frame", message=f"the {service.authenticator.name} authenticator takes no tokens"))
            )
        # Pong needs no answer: any inbound frame already proves the client is alive.


def _aborter(socket: WebSocket, session: asyncio.Task | None):
    """How to end a connection whose peer stopped reading: no frame can reach it any more."""
    abort_transport = socket.scope.get(TRANSPORT_ABORT_KEY)

    def abort() -> None:
        if abort_transport is not None:
            abort_transport()
        if session is not None:
            session.cancel()

    return abort


async def _write(socket: WebSocket, conn: Connection, service: Service) -> None:
    metrics = service.metrics
    outbox = conn.outbox
    send = socket.send
    clock = asyncio.get_running_loop().time
    while True:
        item = await outbox.take()
        conn.sending_since = clock()
        if isinstance(item, CloseRequest):
            with contextlib.suppress(Exception):
                await socket.close(item.code, close_reason(item.reason))
            conn.sending_since = 0.0
            return
        if isinstance(item, Delivery):
            await send({"type": "websocket.send", "text": item.frame})
            conn.sending_since = 0.0
            metrics.events_delivered.inc()
            item.pending_writes -= 1
            if item.pending_writes == 0 and item.received_ns is not None:
                metrics.delivery_latency.observe((time.monotonic_ns() - item.received_ns) / 1e9)
        else:
            await send({"type": "websocket.send", "text": item})
            conn.sending_since = 0.0
