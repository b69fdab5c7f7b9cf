"""Workload 1, the delivery engine: N sockets, events pushed from inside each server process.

For each socket count, two passes over the servers. The first pushes as fast as each server
can (saturation: deliveries per second), in `plan.saturation_pushes` pushes of equal size on the
same sockets; the median push is the result, so that a burst of other work on the shared
machine during one push does not decide a ratio (every push is kept in the results). The second
pushes every server at the same fixed rate, half the slowest server's saturation in that case,
so that latency is compared at a load every server sustains rather than as the length of each
server's own backlog.

Each pass runs two shapes on fresh sockets: `routed` (two sockets per user, one event per user
per round) and `wide` (every socket belongs to one user, so one event reaches all of them).
"""

from __future__ import annotations

import math
import time
from typing import Any

from ..harness import Profiler, Run, delivery_rate, median
from ..procs import Child, free_port, python_module
from ..shape import Mode

MODES: tuple[Mode, ...] = ("routed", "wide")

SERVER_MODULES = {
    "tasksync": "bench.servers.tasksync_engine",
    "websockets": "bench.servers.websockets_broadcast",
    "naive-litestar": "bench.servers.naive_litestar",
    "picows": "bench.servers.picows_server",
}

# What TaskSync's server.py runs first, then the alternatives uvicorn offers.
VARIANTS = (
    ("tasksync", "uvloop"),
    ("websockets-sansio", "uvloop"),
    ("wsproto", "uvloop"),
    ("websockets", "uvloop"),
    ("tasksync", "asyncio"),
)


def start_engine(run: Run, server: str, *extra: str) -> tuple[Child, int]:
    port = free_port()
    args = ["--port", str(port)]
    if server == "tasksync":
        args += ["--limits-file", str(run.limits_file), *extra]
    child = run.start(Child(f"{server}-{port}", python_module(SERVER_MODULES[server], *args), run.raw, control=True))
    child.wait_for_port(port)
    return child, port


def connect(run: Run, server: Child, port: int, mode: Mode, sockets: int) -> dict[str, Any]:
    connected = run.ask({"cmd": "connect", "urls": [f"ws://127.0.0.1:{port}/ws"], "mode": mode, "sockets": sockets})
    if connected["ready"] < sockets:
        raise RuntimeError(f"{server.name}: only {connected['ready']} of {sockets} sockets ready: {connected}")
    # The first frame proves registration for every server here; the count double-checks it.
    deadline = time.monotonic() + 30
    while server.request({"cmd": "count"})["count"] < sockets and time.monotonic() < deadline:
        time.sleep(0.05)
    return connected


def push_and_count(
    run: Run, server: Child, mode: Mode, sockets: int, rounds: int, rate: float | None
) -> dict[str, Any]:
    """One push of `rounds` rounds (`rate` events/s, or as fast as possible) and what arrived."""
    expected = rounds * sockets
    run.ask({"cmd": "reset"})
    cpu_before = server.cpu_seconds()
    pushed = server.request(
        {"cmd": "push", "mode": mode, "sockets": sockets, "rounds": rounds, "rate": rate}, timeout=600
    )
    counted = run.ask({"cmd": "wait", "deliveries": expected, "timeout": 10 + expected / 5_000}, timeout=900)
    server_cpu = server.cpu_seconds() - cpu_before
    return {"expected": expected, **delivery_rate(counted, pushed["push_start_ns"], server_cpu)}


def median_push(pushes: list[dict[str, Any]]) -> dict[str, Any]:
    """The push with the median deliveries per second, with every push's rate beside it."""
    return {**median(pushes, "deliveries_per_s"), "pushes_per_s": [push["deliveries_per_s"] for push in pushes]}


def fanout_of(mode: Mode, sockets: int) -> int:
    return sockets if mode == "wide" else 2


def measure(run: Run, server: str, sockets: int, rates: dict[Mode, float] | None, *extra: str) -> dict[Mode, Any]:
    """Both shapes on one server process; `rates` (deliveries/s per shape) None: saturation."""
    child, port = start_engine(run, server, *extra)
    results: dict[Mode, Any] = {}
    try:
        for mode in MODES:
            connected = connect(run, child, port, mode, sockets)
            label = (
                f"engine-{server}-{'-'.join(extra) or 'default'}-{sockets}-{mode}-{'fixed' if rates else 'saturation'}"
            )
            with Profiler(run, child, label.replace("--", "")):
                if rates is None:
                    deliveries = run.plan.variant_deliveries if extra else run.plan.engine_deliveries
                    pushes = run.plan.saturation_pushes
                    rounds = max(1, deliveries // sockets // pushes)
                    measured = median_push(
                        [push_and_count(run, child, mode, sockets, rounds, None) for _ in range(pushes)]
                    )
                else:
                    rounds = max(3, math.ceil(run.plan.latency_seconds * rates[mode] / sockets))
                    rate = rates[mode] / fanout_of(mode, sockets)
                    measured = push_and_count(run, child, mode, sockets, rounds, rate)
            results[mode] = {"connect_s": round(connected["seconds"], 2), **measured}
            if rates is not None:
                results[mode]["offered_per_s"] = round(rates[mode])
            run.ask({"cmd": "close"})
    finally:
        run.stop(child)
    return results


def run_delivery(run: Run) -> dict[str, Any]:
    peers = run.plan.engine_peers
    cases = []
    for sockets in run.plan.engine_sockets:
        saturation = {server: measure(run, server, sockets, None) for server in peers}
        # A server that delivered nothing has no saturation to halve; the others set the rate.
        rates = {
            mode: 0.5
            * min(
                (saturation[s][mode]["deliveries_per_s"] for s in peers if saturation[s][mode]["deliveries_per_s"]),
                default=1_000,
            )
            for mode in MODES
        }
        latency = {server: measure(run, server, sockets, rates) for server in peers}
        for mode in MODES:
            for server in peers:
                cases.append(
                    {
                        "sockets": sockets,
                        "mode": mode,
                        "server": server,
                        "saturation": saturation[server][mode],
                        "fixed_rate": latency[server][mode],
                    }
                )
    result: dict[str, Any] = {"cases": cases}
    if run.plan.variants:
        sockets = max(run.plan.engine_sockets)
        result["variants"] = [
            {
                "ws": ws,
                "loop": loop,
                "sockets": sockets,
                **measure(run, "tasksync", sockets, None, "--ws", ws, "--loop", loop),
            }
            for ws, loop in VARIANTS
        ]
    return result
