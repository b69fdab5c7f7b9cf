"""TaskSync under an ASGI server other than its own adaptation of uvicorn: uvicorn's plain
sans-I/O WebSocket protocol, which hands the application no transport. Sessions then write
through `AsgiTransport`: every frame through the awaitable ASGI send, and a stalled connection
released by ending its session. Run in-process, so the test can publish and read the service's
metrics directly."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import msgspec
from websockets.asyncio.client import connect

from tasksync.events import TaskEvent
from tasksync.service import Service
from tests.delivery.test_slow_consumer import BIG, small_buffer_socket
from tests.support.servers import in_process_server
from tests.support.waiting import eventually


@contextlib.asynccontextmanager
async def plain_uvicorn(**settings: object) -> AsyncIterator[tuple[Service, int]]:
    async with in_process_server({"ws": "websockets-sansio"}, **settings) as (service, server):
        yield service, server.config.port


def metric(service: Service, name: str, **labels: str) -> float:
    return service.metrics.registry.get_sample_value(name, labels) or 0.0


def event(user: str, n: int, task: dict | None = None) -> TaskEvent:
    return TaskEvent(id=f"{user}-{n}", user_id=user, event="task.updated", task=task or {"n": n}, occurred_at="t")


async def test_events_reach_the_socket_and_a_close_is_sent_through_the_asgi_send():
    async with plain_uvicorn() as (service, port), connect(f"ws://127.0.0.1:{port}/ws?user_id=u") as ws:
        assert msgspec.json.decode(await ws.recv())["type"] == "connected"
        for n in (1, 2):
            await service.ingest(event("u", n))
        updates = [msgspec.json.decode(await ws.recv()) for _ in range(2)]
        assert [(u["type"], u["seq"], u["task"]) for u in updates] == [
            ("task_update", 1, {"n": 1}),
            ("task_update", 2, {"n": 2}),
        ]
        await ws.send(b"binary")
        await ws.wait_closed()
        assert (ws.close_code, ws.close_reason) == (1003, "binary frames are not supported")
        assert metric(service, "tasksync_events_delivered_total") == 2


async def test_a_reader_that_stops_reading_has_its_session_ended_after_send_timeout():
    # An outbox big enough that the writer, not the outbox, is what gets stuck.
    async with plain_uvicorn(send_timeout=1.0, outbox_size=1_000) as (service, port):
        sock = small_buffer_socket(port)
        async with connect(
            f"ws://127.0.0.1:{port}/ws?user_id=stalled", sock=sock, max_size=None, max_queue=1, compression=None
        ) as ws:
            await ws.recv()  # connected; from here on this client reads nothing
            # More than the socket's buffers hold: the writer gets stuck in a send.
            for n in range(1, 600):
                await service.ingest(event("stalled", n, {"blob": BIG}))
            await eventually(
                lambda: metric(service, "tasksync_connections_closed_total", reason="stalled") == 1,
                timeout=20,
                what="the stalled session ended",
            )
            assert service.node.hub.connection_count == 0
        # The server still serves everyone else.
        async with connect(f"ws://127.0.0.1:{port}/ws?user_id=next") as other:
            assert msgspec.json.decode(await other.recv())["type"] == "connected"
