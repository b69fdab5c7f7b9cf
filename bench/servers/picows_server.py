"""The practical ceiling for Python: a `picows` server (Cython frame codec, callbacks, no tasks).

Sends go straight to the transport from the push loop; nothing is awaited per socket.
"""

from __future__ import annotations

import argparse

import uvloop
from picows import WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

from ..shape import peer_frame
from .control import Registry, query_user, serve_control

HELLO = b'{"type":"hello"}'


class _Connection(WSListener):
    def __init__(self, registry: Registry[WSTransport], user: str) -> None:
        self.registry = registry
        self.user = user
        self.transport: WSTransport | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self.registry.add(self.user, transport)
        transport.send(WSMsgType.TEXT, HELLO)

    def on_ws_frame(self, transport: WSTransport, frame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.registry.remove(self.user, transport)


async def run(port: int) -> None:
    registry: Registry[WSTransport] = Registry()

    def route(request: WSUpgradeRequest) -> _Connection:
        _, _, query = request.path.decode().partition("?")
        return _Connection(registry, query_user(query))

    async def emit(user: str, n: int) -> int:
        transports = registry.of(user)
        frame = peer_frame(n).encode()
        for transport in transports:
            transport.send(WSMsgType.TEXT, frame)
        return len(transports)

    server = await ws_create_server(route, "127.0.0.1", port)
    async with server:
        await serve_control(lambda: registry.count, emit)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    uvloop.run(run(parser.parse_args().port))


if __name__ == "__main__":
    main()
