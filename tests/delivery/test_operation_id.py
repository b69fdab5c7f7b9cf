"""The publisher's operation id reaches the socket unchanged, live and replayed, on either broker.

It is how a browser tab recognises the event its own user action caused (docs/protocol.md), so a
broker that dropped it on the way through storage would make that tab toast its own change.
"""

from __future__ import annotations

import msgspec

from tasksync.broker import Broker, Delivery, MemoryBroker
from tasksync.broker.redis import RedisBroker
from tasksync.events import TaskEvent
from tests.support.waiting import eventually

USER = "acting"


def _op_ids(deliveries: list[Delivery]) -> list[str | None]:
    return [msgspec.json.decode(delivery.frame).get("op_id") for delivery in deliveries]


async def _carries_the_operation_id(broker: Broker) -> None:
    live: list[Delivery] = []

    def deliver(delivery: Delivery) -> int:
        live.append(delivery)
        return 1

    broker.set_sink(deliver)
    await broker.watch(USER)
    position = await broker.position(USER)
    for n, op_id in enumerate(["tab1.1", None]):
        event = TaskEvent(id=f"e{n}", user_id=USER, event="task.created", task={"id": n}, occurred_at="t", op_id=op_id)
        await broker.publish(event)
    await eventually(lambda: len(live) == 2, what="both events delivered live")
    assert _op_ids(live) == ["tab1.1", None]
    replay = await broker.replay(USER, position.seq, position.epoch)
    assert _op_ids(replay.deliveries) == ["tab1.1", None]


async def test_the_memory_broker_carries_the_operation_id():
    await _carries_the_operation_id(MemoryBroker())


async def test_the_redis_broker_carries_the_operation_id_through_its_stream_and_channel(redis_server):
    broker = RedisBroker(redis_server.url)
    await broker.start()
    try:
        await eventually(broker.ready, what="the pub/sub listener up")
        await _carries_the_operation_id(broker)
    finally:
        await broker.stop()
