"""Wait for conditions with deadlines: the only way tests here wait for anything. (Turns of the
loop are not waits: no time passes.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T] | T],
    *,
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "condition",
    truthy: bool = True,
) -> T:
    """Call `probe` (plain or async) until it returns a truthy value, or with `truthy=False`
    until it returns at all (a probe made of asserts); an AssertionError from it means "not
    yet". Fail with `what` and the last answer after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = probe()
            if asyncio.iscoroutine(result) or isinstance(result, Awaitable):
                result = await result  # type: ignore[misc]
            if result or not truthy:
                return result  # type: ignore[return-value]
            last = result
        except AssertionError as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        await asyncio.sleep(interval)


def wait_until(probe: Callable[[], T], *, timeout: float = 10.0, interval: float = 0.05, what: str = "condition") -> T:
    """Synchronous `eventually`, for fixtures that are not async."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = probe()
            if result:
                return result
            last = result
        except (AssertionError, OSError) as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


async def turns_of_the_loop(count: int) -> None:
    """Let the event loop run `count` times round, with no time passing: for what must happen
    (or must not) within a few turns, such as a wake-up that should not wait for a timer."""
    for _ in range(count):
        await asyncio.sleep(0)
