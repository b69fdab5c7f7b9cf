"""`python -m bench.ingest`: the CPU the HTTP ingest path costs per event, in one process.

What `POST /v1/events` runs for a body, without the HTTP server around it: decoding and
validating the body (`events_from_http_body`), then `Service.ingest_many` (for each event the
toast hook and the embedded broker's publish: dedupe, offset, history, the frame encoded once). No
sockets are connected, so nothing is delivered: what is measured is the ingest path itself, the
part that workload 2 (end to end) measures together with HTTP and fan-out.

Two bodies: one event object per request, and arrays of 100 events (what workload 2's publisher
sends). The events are the end-to-end workload's, spread over 500 users; the bodies are encoded
before the clock starts, and the clock is this process's CPU time, so a busy neighbour on a
shared machine slows the run down less than it would a wall clock. Each case is measured
`--runs` times on a fresh service; the median counts.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import time
from pathlib import Path
from typing import Any

from tasksync.ingest import events_from_http_body
from tasksync.service import Service
from tasksync.settings import Settings

from .shape import compact_json, task

USERS = 500
# Bodies of each case: events per request.
CASES = {"single": 1, "batch": 100}
# Not timed: the first calls pay for imports, caches and the users' first offsets.
WARMUP_EVENTS = 1_000


def bodies(per_body: int, events: int, ids: itertools.count[int]) -> list[bytes]:
    """`events` events in bodies of `per_body`, each with an id of its own (the broker would
    drop a repeated one as a duplicate), round-robin over the users."""
    out = []
    for start in range(0, events, per_body):
        items = []
        for n in range(start, min(start + per_body, events)):
            event_id = next(ids)
            items.append({"id": f"e-{event_id}", "event": "task.updated", "user_id": f"u{n % USERS}", "task": task(n)})
        out.append(compact_json(items if per_body > 1 else items[0]).encode())
    return out


async def ingest_all(service: Service, prepared: list[bytes]) -> int:
    """What the route does with each body once it is read: how many events were accepted."""
    accepted = 0
    for body in prepared:
        outcomes = await service.ingest_many(events_from_http_body(body))
        accepted += outcomes.count("accepted")
    return accepted


async def measure(per_body: int, events: int) -> float:
    """CPU microseconds per event for `events` events in bodies of `per_body`."""
    service = Service(Settings(dev=True))
    ids = itertools.count()
    await ingest_all(service, bodies(per_body, WARMUP_EVENTS, ids))
    prepared = bodies(per_body, events, ids)
    started = time.process_time()
    accepted = await ingest_all(service, prepared)
    used = time.process_time() - started
    if accepted != events:
        raise RuntimeError(f"{accepted} of {events} events accepted")
    return used / events * 1e6


def run(events: int, runs: int) -> dict[str, Any]:
    result: dict[str, Any] = {"events": events, "runs": runs, "cases": {}}
    for name, per_body in CASES.items():
        each = [round(asyncio.run(measure(per_body, events)), 2) for _ in range(runs)]
        result["cases"][name] = {"events_per_body": per_body, "us_per_event": statistics.median(each), "each": each}
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20_000, help="events per measurement (default 20,000)")
    parser.add_argument("--runs", type=int, default=3, help="measurements per case; the median counts (default 3)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")
    parser.add_argument("--out", type=Path, help="write the result as JSON to this file (workload 7 of bench.run)")
    args = parser.parse_args(argv)
    result = run(args.events, args.runs)
    if args.out is not None:
        args.out.write_text(json.dumps(result) + "\n")
    if args.json:
        print(json.dumps(result))
        return
    for name, case in result["cases"].items():
        each = " / ".join(f"{value:.2f}" for value in case["each"])
        print(f"{name:>6} ({case['events_per_body']:>3} per body): {case['us_per_event']:.2f} µs/event  ({each})")


if __name__ == "__main__":
    main()
