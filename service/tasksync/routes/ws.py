"""The /ws WebSocket route; everything after the upgrade lives in session.py."""

from __future__ import annotations

from litestar import WebSocket, websocket

from ..session import run_session


@websocket("/ws")
async def ws_endpoint(socket: WebSocket) -> None:
    await run_session(socket, socket.app.state.service)
