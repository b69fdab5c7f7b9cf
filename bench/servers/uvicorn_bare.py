"""The ceiling of TaskSync's server stack: a bare ASGI app under uvicorn, run as TaskSync runs it.

uvicorn with httptools, uvicorn's websockets-sansio protocol, uvloop and no permessage-deflate,
the options `tasksync serve` uses, around an app that accepts every WebSocket, sends one frame
and waits for the close: no routing, no authentication; sockets are registered by user, as the
picows server's are. Whatever TaskSync does on top costs more than this, so what this server
reaches is the most any application served by uvicorn could reach with this load generator on
this machine. It takes handshakes only (workload 4); it does not push.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

import uvicorn

from .control import Registry, query_user, serve_uvicorn

HELLO = '{"type":"hello"}'

Send = Any


def app_for(registry: Registry[Send]) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Send) -> None:
        if scope["type"] != "websocket":
            return  # lifespan is off; a plain HTTP request gets uvicorn's 500
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": HELLO})
        user = query_user(scope["query_string"].decode())
        registry.add(user, send)
        try:
            while (await receive())["type"] != "websocket.disconnect":
                pass
        finally:
            registry.remove(user, send)

    return app


async def serve(port: int) -> None:
    registry: Registry[Send] = Registry()
    config = uvicorn.Config(
        app_for(registry),
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        lifespan="off",
        interface="asgi3",
        log_level="warning",
    )

    await serve_uvicorn(uvicorn.Server(config), lambda: registry.count, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    logging.basicConfig(level=logging.WARNING)
    factory = uvicorn.Config(app=None, loop="uvloop").get_loop_factory()  # type: ignore[arg-type]
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
