"""TaskSync's delivery engine with events pushed from inside the process (workload 1).

This builds the real `Service` and Litestar app exactly as `tasksync serve` does and runs them
under uvicorn, then pushes events through the real path, `broker.publish` -> `hub.deliver` ->
outboxes -> writer tasks -> sockets, with no HTTP ingest in the way. It lives here, not in
service/, because pushing on command is a benchmark's need, not the product's.

`--ws` and `--loop` choose uvicorn's WebSocket implementation and event loop, so the benchmark
can compare what `server.py` runs (`tasksync`: its configured WebSocketProtocol, a subclass of
uvicorn's websockets-sansio) against the alternatives without touching the service.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging

import uvicorn

from tasksync.events import TaskEvent
from tasksync.server import uvicorn_config
from tasksync.service import Service
from tasksync.settings import Settings
from tasksync.transport import quiet_client_protocol_errors

from ..shape import TIMESTAMP, task
from .control import serve_uvicorn

# uvicorn's `ws` option for each; `tasksync` keeps what server.py configures.
WS_IMPLEMENTATIONS: dict[str, str | None] = {
    "tasksync": None,
    "websockets-sansio": "websockets-sansio",
    "wsproto": "wsproto",
    "websockets": "websockets",
}
LOOPS = ("uvloop", "asyncio")


async def serve(port: int, ws: str, loop: str, limits_file: str) -> None:
    settings = Settings(dev=True, host="127.0.0.1", port=port, limits_file=limits_file, log_level="warning")
    service = Service(settings)
    ws_option = WS_IMPLEMENTATIONS[ws]
    config = uvicorn_config(service, loop=loop, **({"ws": ws_option} if ws_option else {}))
    quiet_client_protocol_errors()
    server = uvicorn.Server(config)
    # Event ids must stay unique for the whole process: the broker's dedupe window would drop
    # a second push's events otherwise.
    ids = itertools.count()

    async def emit(user: str, n: int) -> int:
        event = TaskEvent(
            id=f"e-{next(ids)}", user_id=user, event="task.updated", task=task(n), occurred_at=TIMESTAMP, source="bench"
        )
        delivery = await service.node.broker.publish(event)
        return delivery.listeners if delivery is not None else 0

    await serve_uvicorn(server, lambda: service.node.hub.connection_count, emit)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ws", choices=sorted(WS_IMPLEMENTATIONS), default="tasksync")
    parser.add_argument("--loop", choices=LOOPS, default="uvloop")
    parser.add_argument("--limits-file", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    factory = uvicorn.Config(app=None, loop=args.loop).get_loop_factory()  # type: ignore[arg-type]
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(args.port, args.ws, args.loop, args.limits_file))


if __name__ == "__main__":
    main()
