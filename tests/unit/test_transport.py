"""The single-consumer stand-ins `WebSocketProtocol` gives uvicorn's protocol, without sockets."""

from __future__ import annotations

import asyncio

import pytest
from tasksync.transport import ReceiveQueue, WritableFlag


async def test_receive_queue_hands_over_in_order_and_wakes_a_waiting_consumer():
    queue = ReceiveQueue()
    queue.put_nowait(1)
    queue.put_nowait(2)
    assert not queue.empty()
    assert [await queue.get(), await queue.get()] == [1, 2]
    assert queue.empty()
    waiting = asyncio.create_task(queue.get())
    await asyncio.sleep(0)  # one turn of the loop, not a wait: the task runs up to its first await
    assert not waiting.done()
    queue.put_nowait(3)
    assert await asyncio.wait_for(waiting, 1) == 3


async def test_a_cancelled_get_loses_nothing():
    queue = ReceiveQueue()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await queue.get()
    queue.put_nowait("kept")
    assert await asyncio.wait_for(queue.get(), 1) == "kept"


async def test_writable_flag_lets_sends_through_until_cleared_and_wakes_every_waiter():
    flag = WritableFlag()
    assert flag.is_set()
    await asyncio.wait_for(flag.wait(), 1)  # set: returns at once
    flag.clear()
    waiters = [asyncio.create_task(flag.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    flag.set()
    await asyncio.wait_for(asyncio.gather(*waiters), 1)
