"""The reference a Python engineer would write: the `websockets` library and its `broadcast()`.

broadcast() writes one encoded message to every connection synchronously and never waits for
a slow one; that is the library's documented way to fan out.
"""

from __future__ import annotations

import argparse
from urllib.parse import urlsplit

import uvloop
from websockets import broadcast
from websockets.asyncio.server import ServerConnection, serve

from ..shape import peer_frame
from .control import Registry, query_user, serve_control

HELLO = '{"type":"hello"}'


async def run(port: int) -> None:
    registry: Registry[ServerConnection] = Registry()

    async def handler(connection: ServerConnection) -> None:
        user = query_user(urlsplit(connection.request.path).query)
        registry.add(user, connection)
        try:
            # The first frame tells the load generator this socket is registered.
            await connection.send(HELLO)
            async for _ in connection:
                pass
        finally:
            registry.remove(user, connection)

    async def emit(user: str, n: int) -> int:
        connections = registry.of(user)
        broadcast(connections, peer_frame(n))
        return len(connections)

    async with serve(handler, "127.0.0.1", port):
        await serve_control(lambda: registry.count, emit)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    uvloop.run(run(parser.parse_args().port))


if __name__ == "__main__":
    main()
