"""Node.register: a user's sockets open their streams only once the broker watches the user,
including the sockets that arrive while the first one's watch is still in flight. And
Node.unregister: a user's last socket ends the watch, except in a process draining to exit."""

from __future__ import annotations

import asyncio

from tasksync.broker import MemoryBroker
from tasksync.connection import Connection
from tasksync.metrics import Metrics
from tasksync.node import Node
from tasksync.ratelimit import BucketsByKey
from tests.support.recording_transport import RecordingTransport
from tests.support.waiting import eventually, turns_of_the_loop


class GatedBroker(MemoryBroker):
    """A broker whose watch returns only once the test opens the gate (a Redis subscription
    still being confirmed)."""

    def __init__(self) -> None:
        super().__init__(history_size=10, history_ttl=60, dedupe_window=60)
        self.gate = asyncio.Event()
        self.watches: list[str] = []
        self.unwatches: list[str] = []

    async def watch(self, user_id: str) -> None:
        self.watches.append(user_id)
        await self.gate.wait()

    async def unwatch(self, user_id: str) -> None:
        self.unwatches.append(user_id)


def _node(broker: GatedBroker) -> Node:
    return Node(
        broker,
        Metrics(),
        outbound=BucketsByKey(100, 100),
        admit_replay=lambda user, events: True,
        heartbeat_interval=30,
        send_timeout=10,
    )


def _conn(user: str) -> Connection:
    return Connection(user, 16, RecordingTransport(), Metrics())


async def _two_sockets_registering(broker: GatedBroker) -> tuple[asyncio.Task[None], asyncio.Task[None]]:
    """Alice's first socket registers, then her second while the first one's watch waits."""
    node = _node(broker)
    first = asyncio.create_task(node.register(_conn("alice")))
    await eventually(lambda: broker.watches == ["alice"], what="the first socket's watch under way")
    second = asyncio.create_task(node.register(_conn("alice")))
    await turns_of_the_loop(20)
    return first, second


async def test_a_second_socket_waits_for_the_watch_its_user_s_first_socket_started():
    broker = GatedBroker()
    first, second = await _two_sockets_registering(broker)
    assert broker.watches == ["alice"]  # one watch per user and process
    assert not first.done() and not second.done()
    broker.gate.set()
    await asyncio.wait_for(asyncio.gather(first, second), 5)


async def test_a_first_socket_that_goes_away_leaves_the_watch_to_the_others():
    broker = GatedBroker()
    first, second = await _two_sockets_registering(broker)
    first.cancel()
    await turns_of_the_loop(20)
    assert not second.done()
    broker.gate.set()
    await asyncio.wait_for(second, 5)
    assert first.cancelled()


async def test_once_the_watch_returned_later_sockets_do_not_wait():
    broker = GatedBroker()
    broker.gate.set()
    node = _node(broker)
    await asyncio.wait_for(node.register(_conn("alice")), 5)
    await asyncio.wait_for(node.register(_conn("alice")), 5)
    assert broker.watches == ["alice"]


async def test_a_draining_node_leaves_its_users_watched_until_the_process_exits():
    broker = GatedBroker()
    broker.gate.set()
    node = _node(broker)
    alice, bob = _conn("alice"), _conn("bob")
    await node.register(alice)
    await node.register(bob)
    await node.unregister(alice)
    node.draining = True
    await node.unregister(bob)
    assert broker.unwatches == ["alice"]
    assert node.hub.connection_count == 0
