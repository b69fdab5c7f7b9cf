"""Workload 1, the delivery engine: N sockets, events pushed from inside each server process.

For each socket count, two passes over the servers. The first pushes as fast as each server can
(saturation: deliveries per second). For it, every server is started and connected at once, each
with its own load generator, and pushed in `plan.saturation_pushes` turns: each turn pushes every
server once, one after another, so that every server's pushes meet the same minutes of this
shared machine, whose speed moved one server's consecutive pushes by up to 35 %. The median push
is the result (every push is kept in the results). The second pushes every server at the same
fixed rate, half the slowest server's saturation in that case, so that latency is compared at a
load every server sustains rather than as the length of each server's own backlog. It measures
each server alone, on a fresh process: with the others alive, their periodic work (heartbeats,
keepalive pings, collections) took the cores from the one measured, and moved every server's p99
by several times from run to run.

Each pass runs two shapes on fresh sockets: `routed` (two sockets per user, one event per user
per round) and `wide` (every socket belongs to one user, so one event reaches all of them).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
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
    """One of SERVER_MODULES on a free port, answering control commands."""
    return start_server(run, server, SERVER_MODULES[server], *extra)


def start_server(run: Run, server: str, module: str, *extra: str) -> tuple[Child, int]:
    port = free_port()
    args = ["--port", str(port)]
    if server == "tasksync":
        args += ["--limits-file", str(run.limits_file), *extra]
    child = run.start(Child(f"{server}-{port}", python_module(module, *args), run.raw, control=True))
    child.wait_for_port(port)
    return child, port


def connect(loadgen: Child, server: Child, port: int, mode: Mode, sockets: int) -> dict[str, Any]:
    connected = loadgen.request(
        {"cmd": "connect", "urls": [f"ws://127.0.0.1:{port}/ws"], "mode": mode, "sockets": sockets}, timeout=300
    )
    if connected["ready"] < sockets:
        raise RuntimeError(f"{server.name}: only {connected['ready']} of {sockets} sockets ready: {connected}")
    # The first frame proves registration for every server here; the count double-checks it.
    deadline = time.monotonic() + 30
    while server.request({"cmd": "count"})["count"] < sockets and time.monotonic() < deadline:
        time.sleep(0.05)
    return connected


def push_and_count(
    loadgen: Child, server: Child, mode: Mode, sockets: int, rounds: int, rate: float | None
) -> dict[str, Any]:
    """One push of `rounds` rounds (`rate` events/s, or as fast as possible) and what arrived."""
    expected = rounds * sockets
    loadgen.request({"cmd": "reset"})
    cpu_before = server.cpu_seconds()
    pushed = server.request(
        {"cmd": "push", "mode": mode, "sockets": sockets, "rounds": rounds, "rate": rate}, timeout=600
    )
    counted = loadgen.request({"cmd": "wait", "deliveries": expected, "timeout": 10 + expected / 5_000}, timeout=900)
    server_cpu = server.cpu_seconds() - cpu_before
    return {"expected": expected, **delivery_rate(counted, pushed["push_start_ns"], server_cpu)}


def median_push(pushes: list[dict[str, Any]]) -> dict[str, Any]:
    """The push with the median deliveries per second, with every push's rate beside it."""
    return {**median(pushes, "deliveries_per_s"), "pushes_per_s": [push["deliveries_per_s"] for push in pushes]}


def fanout_of(mode: Mode, sockets: int) -> int:
    return sockets if mode == "wide" else 2


def saturation_rounds(run: Run, sockets: int, deliveries: int) -> int:
    return max(1, deliveries // sockets // run.plan.saturation_pushes)


def measure_saturation(run: Run, peers: tuple[str, ...], sockets: int) -> dict[str, dict[Mode, Any]]:
    """Saturation of every peer in both shapes, the peers started together and pushed in turns."""
    engines: dict[str, tuple[Child, int]] = {}
    loadgens: dict[str, Child] = {}
    results: dict[str, dict[Mode, Any]] = {server: {} for server in peers}
    try:
        for server in peers:
            engines[server] = start_engine(run, server)
            loadgens[server] = run.extra_loadgen(f"loadgen-{server}")
        for mode in MODES:
            connected = {server: connect(loadgens[server], *engines[server], mode, sockets) for server in peers}
            with contextlib.ExitStack() as profiling:
                for server in peers:
                    label = f"engine-{server}-default-{sockets}-{mode}-saturation"
                    profiling.enter_context(Profiler(run, engines[server][0], label))
                rounds = saturation_rounds(run, sockets, run.plan.engine_deliveries)
                pushes: dict[str, list[dict[str, Any]]] = {server: [] for server in peers}
                for _ in range(run.plan.saturation_pushes):
                    for server in peers:
                        pushes[server].append(
                            push_and_count(loadgens[server], engines[server][0], mode, sockets, rounds, None)
                        )
            for server in peers:
                results[server][mode] = {
                    "connect_s": round(connected[server]["seconds"], 2),
                    **median_push(pushes[server]),
                }
                loadgens[server].request({"cmd": "close"})
    finally:
        for child in [*loadgens.values(), *(child for child, _ in engines.values())]:
            run.stop(child)
    return results


def measure_alone(
    run: Run, server: str, sockets: int, label: str, measure_shape: Callable[[Child, Mode], dict[str, Any]], *extra: str
) -> dict[Mode, Any]:
    """Both shapes on one server process by itself, with the run's load generator."""
    loadgen = run.loadgen
    assert loadgen is not None
    child, port = start_engine(run, server, *extra)
    results: dict[Mode, Any] = {}
    try:
        for mode in MODES:
            connected = connect(loadgen, child, port, mode, sockets)
            with Profiler(
                run, child, f"engine-{server}-{'-'.join(extra).replace('--', '') or 'default'}-{sockets}-{mode}-{label}"
            ):
                measured = measure_shape(child, mode)
            results[mode] = {"connect_s": round(connected["seconds"], 2), **measured}
            loadgen.request({"cmd": "close"})
    finally:
        run.stop(child)
    return results


def measure_fixed_rate(run: Run, server: str, sockets: int, rates: dict[Mode, float]) -> dict[Mode, Any]:
    """Latency of one server alone at `rates` deliveries/s per shape."""
    loadgen = run.loadgen
    assert loadgen is not None

    def at_rate(child: Child, mode: Mode) -> dict[str, Any]:
        rounds = max(3, math.ceil(run.plan.latency_seconds * rates[mode] / sockets))
        rate = rates[mode] / fanout_of(mode, sockets)
        return {**push_and_count(loadgen, child, mode, sockets, rounds, rate), "offered_per_s": round(rates[mode])}

    return measure_alone(run, server, sockets, "fixed", at_rate)


def measure_variant(run: Run, sockets: int, ws: str, loop: str) -> dict[Mode, Any]:
    """Saturation of TaskSync alone under one of uvicorn's WebSocket implementations and loops."""
    loadgen = run.loadgen
    assert loadgen is not None

    def saturated(child: Child, mode: Mode) -> dict[str, Any]:
        rounds = saturation_rounds(run, sockets, run.plan.variant_deliveries)
        return median_push(
            [push_and_count(loadgen, child, mode, sockets, rounds, None) for _ in range(run.plan.saturation_pushes)]
        )

    return measure_alone(run, "tasksync", sockets, "saturation", saturated, "--ws", ws, "--loop", loop)


def run_delivery(run: Run) -> dict[str, Any]:
    peers = run.plan.engine_peers
    cases = []
    for sockets in run.plan.engine_sockets:
        saturation = measure_saturation(run, peers, sockets)
        # A server that delivered nothing has no saturation to halve; the others set the rate.
        rates = {
            mode: 0.5
            * min(
                (saturation[s][mode]["deliveries_per_s"] for s in peers if saturation[s][mode]["deliveries_per_s"]),
                default=1_000,
            )
            for mode in MODES
        }
        latency = {server: measure_fixed_rate(run, server, sockets, rates) for server in peers}
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
            {"ws": ws, "loop": loop, "sockets": sockets, **measure_variant(run, sockets, ws, loop)}
            for ws, loop in VARIANTS
        ]
    return result
