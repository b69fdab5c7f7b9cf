"""Workload 3, memory per idle connection: RSS growth divided by sockets, TaskSync (`tasksync
serve`, as deployed) vs the plain `websockets` server vs Centrifugo.

Each server is measured twice: with clients that offer no extension (the load generator's
default), and with clients that offer permessage-deflate, as every browser does. A server that
accepts the offer keeps a zlib compressor and decompressor per connection, so the second is what
browsers cost. Each measurement first takes and drops a few warm-up connections, so that code
paths loaded on the first connection (imports, caches, buffers) count in the baseline.
"""

from __future__ import annotations

import time
from typing import Any

from .. import centrifugo
from ..harness import Run
from ..procs import Child
from .delivery import start_engine

WARM_UP = 100
# What Chrome and Firefox send in Sec-WebSocket-Extensions.
BROWSER_EXTENSIONS = "permessage-deflate; client_max_window_bits"
CLIENTS = {"plain": None, "browser-like": BROWSER_EXTENSIONS}


def measure(run: Run, name: str, process: Child, url: str, protocol: str, client: str) -> dict[str, Any]:
    sockets = run.plan.memory_sockets

    def connect(count: int) -> dict[str, Any]:
        return run.ask(
            {
                "cmd": "connect",
                "urls": [url],
                "mode": "routed",
                "sockets": count,
                "protocol": protocol,
                "secret": centrifugo.SECRET,
                "extensions": CLIENTS[client],
            }
        )

    connect(min(WARM_UP, sockets))
    run.ask({"cmd": "close"})
    time.sleep(run.plan.memory_settle_seconds)
    before = process.rss_bytes()
    connected = connect(sockets)
    time.sleep(run.plan.memory_settle_seconds)
    after = process.rss_bytes()
    run.ask({"cmd": "close"})
    return {
        "server": name,
        "client": client,
        "sockets": connected["ready"],
        "rss_before_mib": round(before / 2**20, 1),
        "rss_after_mib": round(after / 2**20, 1),
        "kib_per_connection": round((after - before) / 1024 / max(1, connected["ready"]), 2),
    }


def tasksync(run: Run) -> tuple[Child, str, str]:
    child, port = run.tasksync("tasksync", "--dev")
    return child, f"ws://127.0.0.1:{port}/ws", "plain"


def websockets(run: Run) -> tuple[Child, str, str]:
    child, port = start_engine(run, "websockets")
    return child, f"ws://127.0.0.1:{port}/ws", "plain"


def centrifugo_server(run: Run) -> tuple[Child, str, str]:
    child, port = centrifugo.child(run.raw)
    run.start(child).wait_for_port(port)
    return child, f"ws://127.0.0.1:{port}/connection/websocket", "centrifugo"


SERVERS = {"tasksync": tasksync, "websockets": websockets, "centrifugo": centrifugo_server}


def run_memory(run: Run) -> dict[str, Any]:
    """Every server and kind of client on a fresh process: memory a process freed is reused by
    the next connections (Python's and Go's allocators keep it), so a second measurement on the
    same process would count too little."""
    # Built on first use, before anything is measured; without it the workload fails.
    centrifugo.ensure_binary()
    result: dict[str, Any] = {"rows": []}
    for name, start in SERVERS.items():
        for client in CLIENTS:
            child, url, protocol = start(run)
            try:
                result["rows"].append(measure(run, name, child, url, protocol, client))
            finally:
                run.stop(child)
    return result
