"""Workload 5, the reconnect storm: clients behaving like the web client (loadgen/storm.py),
events published throughout, and the server restarted under them.

The server runs with the Redis broker, which keeps offsets and history across a restart of the
service (the embedded broker forgets both by design, so its clients are told to resync). It is
restarted the way a single pod is: SIGTERM, the drain, exit, and a new process on the same port
at once. The drain window is 0, so all sockets are closed with 1012 in the same instant: with one
replica there is nowhere else to go, and a spread drain would only delay everyone.

The storm runs `plan.runs` times, each time with a new Redis, server and clients, and the run
with the median time to 99 % back counts: how long the clients' backoff keeps them away varies
with where each retry falls, and the shared machine's load with the minute.
"""

from __future__ import annotations

import time
from typing import Any

from ..harness import Profiler, Run, median
from ..procs import Child, CpuSampler, Redis, free_port, python_module

STEADY_SECONDS = 2.0
BACK_TIMEOUT = 60.0
SETTLE_SECONDS = 15.0


def run_storm(run: Run) -> dict[str, Any]:
    runs = [storm_once(run, f"{turn + 1}") for turn in range(run.plan.runs)]
    counted = median(runs, "seconds_to_99_resumed")
    return {**counted, "median_run": runs.index(counted) + 1, "runs": runs}


def storm_once(run: Run, name: str) -> dict[str, Any]:
    redis = run.start(Redis(run.raw, run.raw / f"redis-storm-{name}"))
    port = free_port()
    argv = python_module(
        "tasksync.cli",
        "serve",
        "--dev",
        "--port",
        str(port),
        "--broker",
        redis.url,
        "--limits-file",
        str(run.limits_file),
        "--log-level",
        "warning",
        "--drain-window",
        "0",
        "--drain-grace",
        "10",
    )
    servers = [run.start(Child(f"tasksync-storm-{port}-a", argv, run.raw)).wait_for_port(port)]
    try:
        started = run.ask(
            {
                "cmd": "storm_start",
                "url": f"ws://127.0.0.1:{port}/ws",
                "clients": run.plan.storm_clients,
                "publish_url": f"http://127.0.0.1:{port}",
                "rate": run.plan.storm_rate,
            },
            timeout=300,
        )
        time.sleep(STEADY_SECONDS)
        with CpuSampler(lambda: [servers[-1].pid, redis.pid]) as sampler:
            run.ask({"cmd": "storm_mark"})
            stopping = time.monotonic()
            # `--profile`: the old process from SIGTERM to its exit, the new one from its first
            # listen until the storm is over.
            with Profiler(run, servers[-1], f"storm-{name}-stop"):
                run.stop(servers[-1])
            stopped = time.monotonic()
            servers.append(run.start(Child(f"tasksync-storm-{port}-b", argv, run.raw)).wait_for_port(port))
            listening = time.monotonic()
            with Profiler(run, servers[-1], f"storm-{name}-resume"):
                finished = run.ask(
                    {"cmd": "storm_finish", "timeout": BACK_TIMEOUT, "settle": SETTLE_SECONDS}, timeout=300
                )
    finally:
        for server in servers:
            run.stop(server)
        run.stop(redis)
    return {
        "clients": run.plan.storm_clients,
        "publish_rate_per_s": run.plan.storm_rate,
        "initial_connect_s": round(started["seconds"], 2),
        "old_process_exit_s": round(stopped - stopping, 2),
        "new_process_listening_s": round(listening - stopping, 2),
        "peak_server_cpu_cores": round(sampler.peak_cores, 2),
        **finished,
    }
