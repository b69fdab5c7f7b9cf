"""A `Transport` (tasksync.connection) for connection tests without sockets: it records what a
connection writes, and can push back like a peer that stopped reading."""

from __future__ import annotations

import asyncio

import msgspec


class RecordingTransport:
    """Takes frames while `writable`; while not, `write_now` refuses and `send_text` waits until
    it is writable again (a peer that reads nothing)."""

    def __init__(self, *, writable: bool = True) -> None:
        self.sent: list[str] = []
        self.close_frame: tuple[int, str] | None = None
        self.aborted = False
        self._writable = asyncio.Event()
        if writable:
            self._writable.set()

    @property
    def writable(self) -> bool:
        return self._writable.is_set()

    @writable.setter
    def writable(self, value: bool) -> None:
        if value:
            self._writable.set()
        else:
            self._writable.clear()

    def write_now(self, text: str, wire: bytes) -> bool:
        if not self.writable or self.close_frame is not None:
            return False
        self.sent.append(text)
        return True

    async def send_text(self, text: str) -> None:
        await self._writable.wait()
        self.sent.append(text)

    async def send_close(self, code: int, reason: str) -> None:
        self.close_frame = (code, reason)

    def abort(self) -> None:
        self.aborted = True

    def frames(self) -> list[dict]:
        return [msgspec.json.decode(text) for text in self.sent]

    def seqs(self) -> list[int]:
        """The offsets of the task_update frames written so far, in order."""
        return [frame["seq"] for frame in self.frames() if frame["type"] == "task_update"]
