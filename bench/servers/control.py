"""What every Python server of the delivery-engine workload shares: the stdin control channel,
the push loop and a registry of sockets by user.

The control channel is JSON lines on stdin, answered on stdout. It adds no socket, route or port
to the server being measured, and a server whose orchestrator dies reads end-of-file and exits,
so no run leaves a stray process holding ports.

Commands: {"cmd": "count"} answers how many sockets are registered; {"cmd": "push", "mode",
"rounds", "rate"} pushes events (see `push`) and answers when the last one was handed over, on a
server that pushes (workload 4's reference servers only take handshakes).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import uvicorn

from ..shape import Mode, users

T = TypeVar("T")

# The push loop gives the event loop a turn after queueing this many deliveries, the same for
# every server: without it a server whose sends are synchronous would never read, and one whose
# sends are tasks would never write, until the whole push is over.
YIELD_EVERY = 1000

# Paced pushes sleep only when they are at least this far ahead: asyncio's timers are not finer.
MIN_SLEEP_NS = 1_000_000

# emit(user, n) queues event `n` for every socket of `user` and returns how many sockets that was.
Emit = Callable[[str, int], Awaitable[int]]


class Registry(Generic[T]):
    """Sockets by user, as each server's own handler registers them."""

    def __init__(self) -> None:
        self.by_user: dict[str, set[T]] = {}
        self.count = 0

    def add(self, user: str, socket: T) -> None:
        self.by_user.setdefault(user, set()).add(socket)
        self.count += 1

    def remove(self, user: str, socket: T) -> None:
        sockets = self.by_user.get(user)
        if sockets is not None and socket in sockets:
            sockets.discard(socket)
            self.count -= 1
            if not sockets:
                del self.by_user[user]

    def of(self, user: str) -> set[T]:
        return self.by_user.get(user, set())


async def push(mode: Mode, sockets: int, rounds: int, rate: float | None, emit: Emit) -> dict[str, Any]:
    """Push `rounds` events to every user (one event per user per round), round-robin.

    `rate` None pushes as fast as the server can (saturation); otherwise events are spread evenly
    at `rate` events per second. Each event is stamped when it is pushed, so latency measures the
    server's own delay from push to the client's read."""
    targets = users(mode, sockets)
    total = rounds * len(targets)
    interval_ns = 1e9 / rate if rate else 0.0
    start = time.monotonic_ns()
    queued = 0
    for n in range(total):
        if interval_ns:
            ahead = start + n * interval_ns - time.monotonic_ns()
            if ahead > MIN_SLEEP_NS:
                await asyncio.sleep(ahead / 1e9)
        queued += await emit(targets[n % len(targets)], n)
        if queued >= YIELD_EVERY:
            queued = 0
            await asyncio.sleep(0)
    return {"push_start_ns": start, "push_end_ns": time.monotonic_ns(), "events": total}


async def serve_control(count: Callable[[], int], emit: Emit | None) -> None:
    """Answer control commands until stdin closes. `count()` is how many sockets are registered;
    without `emit` the server does not push."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        command = json.loads(line)
        if command["cmd"] == "count":
            reply: dict[str, Any] = {"count": count()}
        elif command["cmd"] == "push" and emit is not None:
            reply = await push(command["mode"], command["sockets"], command["rounds"], command.get("rate"), emit)
        elif command["cmd"] == "push":
            reply = {"error": "this server takes handshakes only; it does not push"}
        else:
            reply = {"error": f"unknown command {command['cmd']!r}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


async def serve_uvicorn(server: uvicorn.Server, count: Callable[[], int], emit: Emit | None) -> None:
    """Run a uvicorn server (the Litestar-based servers) while answering control commands, and
    stop it once stdin closes."""
    serving = asyncio.create_task(server.serve())
    try:
        await serve_control(count, emit)
    finally:
        server.should_exit = True
        await serving


def query_user(query: str) -> str:
    """The `user_id` of a handshake's query string; the load generator always sends exactly one."""
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if name == "user_id":
            return value
    return ""
