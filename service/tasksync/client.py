"""An async Python client for /ws: connect, iterate typed frames, reconnect and resume.

Used by `tasksync tail` and by the test suite. It follows the web client's rules: exponential
backoff (1, 2, 4, 8, 16, then 30 s) with jitter, resume from the last `seq`/`epoch`, and a
handshake that says it is a reconnect and how many attempts failed before it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.frames import CloseCode

from .protocol import (
    BEARER_PREFIX,
    CLOSE_FORBIDDEN,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_SERVICE_RESTART,
    CLOSE_TOO_BIG,
    CLOSE_UNAUTHENTICATED,
    CLOSE_UNSUPPORTED_DATA,
    SUBPROTOCOL,
    Connected,
    Ping,
    Pong,
    ServerFrame,
    TaskUpdate,
)

DEFAULT_BACKOFF = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
# Close codes after which reconnecting cannot help without a change on the client's side.
TERMINAL_CLOSE_CODES = frozenset(
    {CLOSE_UNSUPPORTED_DATA, CLOSE_POLICY, CLOSE_TOO_BIG, CLOSE_UNAUTHENTICATED, CLOSE_FORBIDDEN}
)

_frames = msgspec.json.Decoder(ServerFrame)
_client_encoder = msgspec.json.Encoder()


class ClientClosed(Exception):
    """The connection ended and will not be re-established (terminal code, or no reconnect)."""

    def __init__(self, code: int | None, reason: str):
        super().__init__(f"closed: code={code} reason={reason!r}")
        self.code = code
        self.reason = reason


def backoff_delay(attempt: int, schedule: Sequence[float] = DEFAULT_BACKOFF, jitter: float = 0.2) -> float:
    """Delay before reconnect attempt `attempt` (1-based), spread by +/- `jitter`."""
    base = schedule[min(attempt, len(schedule)) - 1]
    return base * (1 + random.uniform(-jitter, jitter))


class SyncClient:
    def __init__(
        self,
        url: str | Sequence[str],
        *,
        user_id: str | None = None,
        token: str | None = None,
        resume: bool = True,
        reconnect: bool = False,
        max_attempts: int = 10,
        backoff: Sequence[float] = DEFAULT_BACKOFF,
        jitter: float = 0.2,
        answer_pings: bool = True,
        open_timeout: float = 10.0,
    ) -> None:
        # Several URLs: each reconnect attempt moves on to the next (replicas without a balancer).
        self.urls = [url] if isinstance(url, str) else list(url)
        self._url_index = 0
        self.user_id = user_id
        self.token = token
        self.resume = resume
        self.reconnect = reconnect
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.jitter = jitter
        self.answer_pings = answer_pings
        self.open_timeout = open_timeout
        self.last_seq: int | None = None
        self.epoch: str | None = None
        self.connected: Connected | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self.connections = 0
        self._ws: ClientConnection | None = None
        self._failed_attempts = 0

    # -- connection ------------------------------------------------------------------------

    def handshake_url(self) -> str:
        parts = urlsplit(self.urls[self._url_index % len(self.urls)])
        query = dict(parse_qsl(parts.query))
        if self.user_id is not None:
            query["user_id"] = self.user_id
        if self.resume and self.last_seq is not None and self.epoch is not None:
            query["since"], query["epoch"] = str(self.last_seq), self.epoch
        if self.connections > 0:
            query["reconnect"], query["attempts"] = "1", str(self._failed_attempts)
        return urlunsplit(parts._replace(query=urlencode(query)))

    async def connect(self) -> Connected:
        """Open one connection and return its `connected` frame."""
        subprotocols = [SUBPROTOCOL] + ([BEARER_PREFIX + self.token] if self.token else [])
        self._ws = await connect(
            self.handshake_url(),
            subprotocols=subprotocols,  # type: ignore[arg-type]
            open_timeout=self.open_timeout,
            max_size=None,
            ping_interval=None,
        )
        self.connections += 1
        self._failed_attempts = 0
        frame = await self._receive_raw()
        if not isinstance(frame, Connected):
            raise ClientClosed(None, f"expected a connected frame first, got {type(frame).__name__}")
        self.connected = frame
        if not frame.resumed:
            # Not resumed: this connection's starting point is the server's head.
            self.last_seq, self.epoch = frame.seq, frame.epoch
        return frame

    async def close(self, code: int = CLOSE_NORMAL) -> None:
        if self._ws is not None:
            await self._ws.close(code)

    async def __aenter__(self) -> SyncClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- frames ----------------------------------------------------------------------------

    async def send(self, frame: msgspec.Struct) -> None:
        assert self._ws is not None, "connect() first"
        await self._ws.send(encode_client(frame))

    async def send_raw(self, data: str | bytes) -> None:
        assert self._ws is not None, "connect() first"
        await self._ws.send(data)

    async def receive(self) -> ServerFrame:
        """The next frame; with `reconnect`, across reconnects (raises ClientClosed when the
        connection ends for good)."""
        while True:
            try:
                return await self._receive_raw()
            except ConnectionClosed as closed:
                self._record_close(closed)
                if not self.reconnect or self.close_code in TERMINAL_CLOSE_CODES:
                    raise ClientClosed(self.close_code, self.close_reason) from None
                await self._reconnect()

    async def _receive_raw(self) -> ServerFrame:
        assert self._ws is not None, "connect() first"
        while True:
            data = await self._ws.recv()
            frame = _frames.decode(data)
            if isinstance(frame, TaskUpdate):
                self.last_seq, self.epoch = frame.seq, frame.epoch
            elif self.answer_pings and isinstance(frame, Ping):
                await self._ws.send(encode_client(Pong()))
            return frame

    async def frames(self) -> AsyncIterator[ServerFrame]:
        while True:
            try:
                yield await self.receive()
            except ClientClosed:
                return

    def __aiter__(self) -> AsyncIterator[ServerFrame]:
        return self.frames()

    async def wait_closed(self) -> tuple[int | None, str]:
        """Read until the server closes the socket; the close code and reason."""
        assert self._ws is not None, "connect() first"
        try:
            while True:
                await self._ws.recv()
        except ConnectionClosed as closed:
            self._record_close(closed)
        return self.close_code, self.close_reason

    def _record_close(self, closed: ConnectionClosed) -> None:
        received = closed.rcvd
        self.close_code = received.code if received else CloseCode.ABNORMAL_CLOSURE
        self.close_reason = received.reason if received else ""

    async def _reconnect(self) -> None:
        attempt = 0
        while True:
            attempt += 1
            if attempt > self.max_attempts:
                raise ClientClosed(self.close_code, f"gave up after {self.max_attempts} attempts")
            # 1012 (drain) means "reconnect elsewhere now": no backoff, only a little jitter.
            delay = (
                random.uniform(0, 0.5)
                if self.close_code == CLOSE_SERVICE_RESTART and attempt == 1
                else backoff_delay(attempt, self.backoff, self.jitter)
            )
            await asyncio.sleep(delay)
            self._url_index += 1
            try:
                await self.connect()
                return
            except (TimeoutError, OSError, InvalidHandshake, InvalidStatus, ConnectionClosed):
                self._failed_attempts += 1


def encode_client(frame: msgspec.Struct) -> str:
    return _client_encoder.encode(frame).decode()
