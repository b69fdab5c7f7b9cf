"""The straightforward approach: a Litestar app that, per event, awaits
asyncio.gather(send_text ...) over the user's sockets. Encoded once per event; run under
uvicorn's defaults (uvloop, httptools, websockets-sansio), as `uvicorn app:app` would run it.
"""

from __future__ import annotations

import argparse
import asyncio

import uvicorn
from litestar import Litestar, WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect

from ..shape import peer_frame
from .control import Registry, serve_uvicorn

HELLO = '{"type":"hello"}'


def build(registry: Registry[WebSocket]) -> Litestar:
    @websocket("/ws")
    async def endpoint(socket: WebSocket) -> None:
        await socket.accept()
        user = socket.query_params.get("user_id", "")
        registry.add(user, socket)
        try:
            await socket.send_text(HELLO)
            while True:
                await socket.receive_text()
        except WebSocketDisconnect:
            pass
        finally:
            registry.remove(user, socket)

    return Litestar(route_handlers=[endpoint], openapi_config=None)


async def run(port: int) -> None:
    registry: Registry[WebSocket] = Registry()

    async def emit(user: str, n: int) -> int:
        sockets = list(registry.of(user))
        frame = peer_frame(n)
        await asyncio.gather(*(socket.send_text(frame) for socket in sockets))
        return len(sockets)

    server = uvicorn.Server(uvicorn.Config(build(registry), host="127.0.0.1", port=port, log_level="warning"))
    await serve_uvicorn(server, lambda: registry.count, emit)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    factory = uvicorn.Config(app=None).get_loop_factory()  # type: ignore[arg-type]
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(run(parser.parse_args().port))


if __name__ == "__main__":
    main()
