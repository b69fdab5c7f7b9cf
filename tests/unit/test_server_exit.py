"""DrainingServer's way out: the end of the drain starts the shutdown at once, and the shutdown
takes uvicorn's steps paced by what is still open, not by a 0.1 s clock (a restarting pod's
clients wait for every tenth of a second of it)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from tasksync.server import MAIN_LOOP_TICK, SHUTDOWN_POLL, DrainingServer
from tasksync.service import Service
from tasksync.settings import Settings
from tests.support.waiting import eventually, turns_of_the_loop


class Closing:
    """An open connection that is gone `polls` shutdown polls after it is asked to close."""

    def __init__(self, state: ServerState, polls: int) -> None:
        self.state = state
        self.polls = polls
        state.connections.add(self)  # type: ignore[arg-type]

    def shutdown(self) -> None:
        asyncio.get_running_loop().call_later(self.polls * SHUTDOWN_POLL, self.state.connections.discard, self)


class Lifespan:
    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.open_at_shutdown: tuple[int, int] | None = None

    async def shutdown(self) -> None:
        self.open_at_shutdown = (len(self.state.connections), len(self.state.tasks))


def _server(timeout: float) -> tuple[DrainingServer, Lifespan, list[Any]]:
    settings = Settings(dev=True, host="127.0.0.1", port=0)
    server = DrainingServer(uvicorn.Config(app=None, timeout_graceful_shutdown=timeout), Service(settings))  # type: ignore[arg-type]
    closed: list[Any] = []
    server.servers = [SimpleNamespace(close=lambda: closed.append("listener"), wait_closed=_nothing)]  # type: ignore[list-item]
    lifespan = Lifespan(server.server_state)
    server.lifespan = lifespan
    return server, lifespan, closed


async def _nothing() -> None:
    return None


async def _forever() -> None:
    await asyncio.Event().wait()


async def test_shutdown_ends_as_soon_as_connections_and_tasks_are_gone(monkeypatch: pytest.MonkeyPatch):
    server, lifespan, closed = _server(timeout=5)
    Closing(server.server_state, polls=3)
    task = asyncio.ensure_future(asyncio.sleep(4 * SHUTDOWN_POLL))
    server.server_state.tasks.add(task)
    task.add_done_callback(server.server_state.tasks.discard)
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def recording_sleep(delay: float, result: Any = None) -> Any:
        slept.append(delay)
        return await real_sleep(delay, result)

    monkeypatch.setattr(asyncio, "sleep", recording_sleep)
    await asyncio.wait_for(server.shutdown(), 5)
    assert closed == ["listener"]
    assert lifespan.open_at_shutdown == (0, 0)
    # uvicorn's own shutdown sleeps 0.1 s before it looks, then 0.1 s at a time.
    assert slept and max(slept) == SHUTDOWN_POLL, slept


async def test_what_outlives_the_graceful_timeout_is_cancelled_and_the_app_still_shuts_down():
    server, lifespan, _ = _server(timeout=0.05)
    forever = asyncio.ensure_future(_forever())
    server.server_state.tasks.add(forever)
    await asyncio.wait_for(server.shutdown(), 5)
    await asyncio.wait({forever}, timeout=5)
    assert forever.cancelled()
    assert lifespan.open_at_shutdown is not None


async def test_the_end_of_the_drain_wakes_the_main_loop_without_waiting_for_its_tick():
    server, _, _ = _server(timeout=5)
    ticks: list[int] = []

    async def on_tick(counter: int) -> bool:
        ticks.append(counter)
        return server.should_exit

    server.on_tick = on_tick  # type: ignore[method-assign]
    main_loop = asyncio.ensure_future(server.main_loop())
    await eventually(lambda: len(ticks) >= 2, what="two ticks")
    # The service has no connections: its drain is over on the next turns of the loop.
    server._start_drain()
    await turns_of_the_loop(10)
    assert main_loop.done(), f"still waiting for the next {MAIN_LOOP_TICK} s tick"
    assert server.should_exit
