"""Workload 4, handshakes per second: `tasksync serve` with JWT auth (HS256, the token in the
`bearer.<token>` subprotocol as browsers send it) vs development auth (`?user_id=`).

A handshake counts once TaskSync's `connected` frame arrives: the upgrade, authentication,
registration and the opening of the stream are all done by then. The client then closes.

Two reference servers are measured the same way, each doing the upgrade and one frame with no
authentication: a bare ASGI app under uvicorn run with TaskSync's options (`uvicorn`), the ceiling
of the stack TaskSync is served by, and the picows server of workload 1 (Cython), the ceiling a
Python server could show with this load generator on this machine.

All the servers run side by side and are measured in turns, `plan.runs` times each, and each one's
median counts: measured one after the other, once each, the two were seconds apart, and a
change in the shared machine's load between them decided which was faster.
"""

from __future__ import annotations

from typing import Any

from ..harness import Profiler, Run, cpu_share, median
from ..procs import Child
from .delivery import SERVER_MODULES, start_server

JWT_SECRET = "bench-secret-that-is-long-enough-for-hs256!"
CONCURRENCY = 64
# The first handshakes of a process warm it up (imports, caches) and are not counted.
WARM_UP = 200


# The reference servers, whose first frame is `hello`, and their modules.
REFERENCES = {"uvicorn": "bench.servers.uvicorn_bare", "picows": SERVER_MODULES["picows"]}


def command(port: int, auth: str, count: int) -> dict[str, Any]:
    """`auth`: "dev", "jwt", or one of REFERENCES."""
    return {
        "cmd": "handshakes",
        "url": f"ws://127.0.0.1:{port}/ws",
        "concurrency": CONCURRENCY,
        "jwt_secret": JWT_SECRET if auth == "jwt" else None,
        "first_frame": "hello" if auth in REFERENCES else "connected",
        "count": count,
    }


def measure(run: Run, auth: str, child: Child, port: int, label: str) -> dict[str, Any]:
    cpu_before = child.cpu_seconds()
    with Profiler(run, child, label):
        measured = run.ask(command(port, auth, run.plan.handshakes), timeout=600)
    server_cpu = child.cpu_seconds() - cpu_before
    return {
        "completed": measured["completed"],
        "failed": measured["failed"],
        "first_failure": measured["first_failure"],
        "per_s": round(measured["completed"] / measured["seconds"]),
        "server_cpu_cores": round(server_cpu / measured["seconds"], 2),
        # What a handshake costs the server, whatever else the machine was doing meanwhile.
        "server_cpu_ms_each": round(1000 * server_cpu / max(1, measured["completed"]), 3),
        "loadgen_cpu_share": cpu_share(measured["cpu_s"], server_cpu),
    }


def run_handshakes(run: Run) -> dict[str, Any]:
    servers = {
        "dev": run.tasksync("tasksync-dev", "--dev"),
        "jwt": run.tasksync("tasksync-jwt", "--auth", "jwt", env={"TASKSYNC_JWT_SECRET": JWT_SECRET}),
        **{reference: start_server(run, reference, module) for reference, module in REFERENCES.items()},
    }
    measured: dict[str, list[dict[str, Any]]] = {auth: [] for auth in servers}
    try:
        for auth, (_, port) in servers.items():
            run.ask(command(port, auth, min(WARM_UP, run.plan.handshakes)))
        for turn in range(run.plan.runs):
            for auth, (child, port) in servers.items():
                measured[auth].append(measure(run, auth, child, port, f"handshakes-{auth}-{turn + 1}"))
    finally:
        for child, _ in servers.values():
            run.stop(child)
    return {
        "concurrency": CONCURRENCY,
        "rows": [{"auth": auth, **median(runs, "per_s"), "runs": runs} for auth, runs in measured.items()],
    }
