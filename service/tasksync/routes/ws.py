"""The /ws WebSocket route; everything after the upgrade lives in session.py."""

from __future__ import annotations

from litestar import websocket

from ..session import run_session

# The session itself is the handler: a wrapper's coroutine frame would stay on every
# connection's stack for its whole life.
ws_endpoint = websocket("/ws")(run_session)
