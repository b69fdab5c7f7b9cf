"""`python -m bench.engine_cost`: what TaskSync's routed delivery path costs per event in one
process, with the sockets faked.

Workload 1 pushes events through `broker.publish` -> `Hub.deliver` -> `Connection.write_now` into
real sockets, where the write system calls and the loopback dominate and the machine's load moves
every figure. This runs the same path, built by the real `Service` (embedded broker, metrics,
rate limits), into 1,000 connections of 500 users whose transport takes each frame without
writing it, and reports per event:

- the CPU time of the process (publish, dedupe, offset, history, encoding, framing, the rate
  limit, metrics, two connections' checks), as `tasksync_engine`'s push makes them;
- how much the process's resident memory grew, which is what the history holds for resumes (the
  dedupe window is full before the count starts, so it no longer grows).

Each run is a fresh process (`--runs` of them; the median counts), warmed up past the dedupe
window's 100,000 ids first. Put another tree's `service/` first on PYTHONPATH to measure it
(bench/README.md, "Comparing two versions").
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from tasksync.broker import MemoryBroker
from tasksync.connection import Connection
from tasksync.events import TaskEvent
from tasksync.service import Service
from tasksync.settings import Settings

from .procs import REPO, python_path
from .shape import TIMESTAMP, task, users

SOCKETS = 1_000
# Past the dedupe window's default 100,000 ids, so that the window is full when counting starts.
WARMUP_EVENTS = 110_000


class _TakesEverything:
    """A connection's transport whose peer reads everything at once."""

    __slots__ = ()

    def write_now(self, text: str, wire: bytes) -> bool:
        return True


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def _measure(events: int) -> dict[str, float]:
    service = Service(Settings(dev=True))
    node = service.node
    broker = node.broker
    assert isinstance(broker, MemoryBroker), "development settings run the embedded broker"
    for index in range(SOCKETS):
        # Only write_now is reached: every frame is taken at once, so nothing waits in an outbox.
        conn = Connection(f"u{index // 2}", 100, _TakesEverything(), service.metrics)  # type: ignore[arg-type]
        conn.epoch = broker.epoch
        conn.end_replay(0)
        node.hub.add(conn)
    targets = users("routed", SOCKETS)
    ids = itertools.count()

    async def push(count: int) -> int:
        delivered = 0
        for n in range(count):
            event = TaskEvent(
                id=f"e-{next(ids)}",
                user_id=targets[n % len(targets)],
                event="task.updated",
                task=task(n),
                occurred_at=TIMESTAMP,
                source="bench",
            )
            delivery = await broker.publish(event)
            delivered += delivery.listeners if delivery is not None else 0
        return delivered

    await push(WARMUP_EVENTS)
    rss_before, cpu_before = _resident_bytes(), time.process_time()
    delivered = await push(events)
    cpu, rss = time.process_time() - cpu_before, _resident_bytes() - rss_before
    if delivered != 2 * events:
        raise RuntimeError(f"{delivered} deliveries for {events} events to two sockets each")
    return {"us_per_event": cpu / events * 1e6, "bytes_per_event": rss / events}


def run(events: int, runs: int) -> dict[str, Any]:
    each = []
    for _ in range(runs):
        child = subprocess.run(
            [sys.executable, "-m", "bench.engine_cost", "--one", "--events", str(events)],
            check=True,
            capture_output=True,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": python_path()},
        )
        each.append(json.loads(child.stdout))
    return {
        "events": events,
        "us_per_event": round(statistics.median(run["us_per_event"] for run in each), 2),
        "bytes_per_event": round(statistics.median(run["bytes_per_event"] for run in each)),
        "each": each,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.engine_cost", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000, help="events counted per run (default 200,000)")
    parser.add_argument("--runs", type=int, default=3, help="fresh processes; the median counts (default 3)")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # one run, as JSON
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(asyncio.run(_measure(args.events))))
        return
    result = run(args.events, args.runs)
    each = " / ".join(f"{one['us_per_event']:.2f}" for one in result["each"])
    print(
        f"{result['us_per_event']:.2f} µs and {result['bytes_per_event']:,} bytes of resident memory per routed "
        f"event ({each} µs)"
    )


if __name__ == "__main__":
    main()
