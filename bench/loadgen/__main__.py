"""`python -m bench.loadgen`: read JSON commands from stdin, answer each with one JSON line.

Commands: connect, reset, wait, close (fanout.py); publish (publish.py); handshakes
(handshakes.py); storm_start, storm_mark, storm_finish (storm.py); quit.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
from typing import Any

import uvloop

from .fanout import Fanout
from .handshakes import handshakes
from .publish import publish
from .storm import Storm

# Ten thousand sockets and then some; raised to the hard limit if that is lower.
WANTED_FILES = 65536


def raise_file_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for wanted in (max(WANTED_FILES, hard), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
        except (ValueError, OSError):
            continue
    return soft


async def main() -> None:
    limit = raise_file_limit()
    fanout = Fanout()
    storm = Storm()

    async def storm_start(command: dict[str, Any]) -> dict[str, Any]:
        # Every storm starts from nothing: clients, what they received, what was acknowledged.
        nonlocal storm
        storm = Storm()
        return await storm.start(command)

    handlers: dict[str, Any] = {
        "connect": fanout.connect,
        "wait": fanout.wait,
        "close": lambda _: fanout.close(),
        "publish": publish,
        "handshakes": handshakes,
        "storm_start": storm_start,
        "storm_finish": lambda command: storm.finish(command),
    }
    instant: dict[str, Any] = {
        "reset": lambda _: fanout.reset(),
        "storm_mark": lambda _: storm.mark(),
        "hello": lambda _: {"file_limit": limit},
    }
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        command = json.loads(line)
        name = command["cmd"]
        if name == "quit":
            break
        try:
            if name in instant:
                reply = instant[name](command)
            else:
                reply = await handlers[name](command)
        except Exception as exc:  # the orchestrator records it; the generator stays usable
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    uvloop.run(main())
