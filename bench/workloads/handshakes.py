"""Workload 4, handshakes per second: `tasksync serve` with JWT auth (HS256, the token in the
`bearer.<token>` subprotocol as browsers send it) vs development auth (`?user_id=`).

A handshake counts once TaskSync's `connected` frame arrives: the upgrade, authentication,
registration and the opening of the stream are all done by then. The client then closes.
"""

from __future__ import annotations

from typing import Any

from ..harness import Profiler, Run, cpu_share

JWT_SECRET = "bench-secret-that-is-long-enough-for-hs256!"
CONCURRENCY = 64


def rate(run: Run, auth: str, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    child, port = run.tasksync(f"tasksync-{auth}", *args, env=env)
    try:
        command = {
            "cmd": "handshakes",
            "url": f"ws://127.0.0.1:{port}/ws",
            "concurrency": CONCURRENCY,
            "jwt_secret": JWT_SECRET if auth == "jwt" else None,
        }
        # The first few hundred warm the process up (imports, caches) and are not counted.
        run.ask({**command, "count": min(200, run.plan.handshakes)})
        cpu_before = child.cpu_seconds()
        with Profiler(run, child, f"handshakes-{auth}"):
            measured = run.ask({**command, "count": run.plan.handshakes}, timeout=600)
        server_cpu = child.cpu_seconds() - cpu_before
    finally:
        run.stop(child)
    return {
        "auth": auth,
        "completed": measured["completed"],
        "failed": measured["failed"],
        "first_failure": measured["first_failure"],
        "per_s": round(measured["completed"] / measured["seconds"]),
        "server_cpu_cores": round(server_cpu / measured["seconds"], 2),
        "loadgen_cpu_share": cpu_share(measured["cpu_s"], server_cpu),
    }


def run_handshakes(run: Run) -> dict[str, Any]:
    return {
        "concurrency": CONCURRENCY,
        "rows": [
            rate(run, "dev", "--dev"),
            rate(run, "jwt", "--auth", "jwt", env={"TASKSYNC_JWT_SECRET": JWT_SECRET}),
        ],
    }
