"""A finished connection is freed when it ends, by reference counting, not left for the cyclic
garbage collector: each one left in a reference cycle stayed in memory until a full collection,
5,000 of them after a reconnect storm (docs/performance.md, "The reconnect storm")."""

from __future__ import annotations

import contextlib
import gc
import weakref
from collections.abc import Iterator

import msgspec
import pytest
import uvicorn
from websockets.asyncio.client import connect

from tasksync.transport import WebSocketProtocol
from tests.support.servers import in_process_server
from tests.support.waiting import eventually


@contextlib.contextmanager
def collector_off() -> Iterator[None]:
    """Only reference counting frees anything meanwhile: what a cycle holds stays."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def websocket_protocols(server: uvicorn.Server) -> list[weakref.ref[WebSocketProtocol]]:
    return [weakref.ref(p) for p in server.server_state.connections if isinstance(p, WebSocketProtocol)]


@pytest.mark.parametrize("closed_by", ["client", "server"])
async def test_a_closed_connection_is_freed_without_the_cyclic_collector(closed_by):
    with collector_off():
        async with in_process_server() as (_, server):
            port = server.config.port
            sockets = [await connect(f"ws://127.0.0.1:{port}/ws?user_id=u{n}") for n in range(3)]
            for ws in sockets:
                assert msgspec.json.decode(await ws.recv())["type"] == "connected"
            protocols = websocket_protocols(server)
            assert len(protocols) == 3
            for ws in sockets:
                if closed_by == "client":
                    await ws.close()
                else:
                    await ws.send(b"binary")  # refused: the server closes with 1003
                    await ws.wait_closed()
                    assert ws.close_code == 1003

            def all_freed() -> bool:
                return all(ref() is None for ref in protocols)

            await eventually(all_freed, what="every closed connection's protocol freed")
