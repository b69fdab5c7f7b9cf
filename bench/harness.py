"""One benchmark run's shared state: the plan, the load generator, the servers it started, and
the few measurements every workload takes the same way."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .plan import Plan
from .procs import Child, free_port, loadavg, python_module

# A limits file that lifts every limit the benchmarks would otherwise hit: one user holding
# every socket (the wide case), 10,000 sockets per process, and event rates far above the
# production defaults. The limits are checked per event all the same, so their cost is measured.
BENCH_LIMITS = """\
apiVersion: tasksync.io/limits/v1
generation: 1
limits:
  max_connections_per_user: 100000
  max_connections_per_process: 100000
  outbound_events_per_second_per_user: 10000000
  outbound_burst_per_user: 10000000
  publish_requests_per_second_per_key: 10000000
  publish_burst_per_key: 10000000
"""


@dataclass
class Run:
    plan: Plan
    raw: Path
    profile: bool = False
    children: list[Child] = field(default_factory=list)
    loadgen: Child | None = None

    def __post_init__(self) -> None:
        self.raw.mkdir(parents=True, exist_ok=True)
        self.limits_file = self.raw / "limits.yaml"
        self.limits_file.write_text(BENCH_LIMITS)

    def start(self, child: Child) -> Child:
        self.children.append(child)
        return child.start()

    def start_loadgen(self) -> Child:
        """The load generator `ask` talks to."""
        self.loadgen = self.extra_loadgen("loadgen")
        return self.loadgen

    def extra_loadgen(self, name: str) -> Child:
        """Another load generator process, for a workload that holds more sockets at once than
        one process may open (this machine's hard limit is 20,000 files per process)."""
        loadgen = self.start(Child(name, python_module("bench.loadgen"), self.raw, control=True))
        loadgen.request({"cmd": "hello"})
        return loadgen

    def tasksync(self, name: str, *args: str, env: dict[str, str] | None = None) -> tuple[Child, int]:
        """The real `tasksync serve`, as production runs it, on a free port. Without a drain window:
        stopping it is not what these workloads measure (the storm sets its own)."""
        port = free_port()
        argv = python_module(
            "tasksync.cli",
            "serve",
            "--port",
            str(port),
            "--limits-file",
            str(self.limits_file),
            "--log-level",
            "warning",
            "--drain-window",
            "0",
            "--drain-grace",
            "5",
            *args,
        )
        child = self.start(Child(f"{name}-{port}", argv, self.raw, env=env))
        child.wait_for_port(port)
        return child, port

    def stop(self, child: Child) -> None:
        child.stop()
        if child in self.children:
            self.children.remove(child)

    def close(self) -> None:
        for child in reversed(self.children):
            child.stop()
        self.children.clear()

    def ask(self, command: dict[str, Any], timeout: float = 300) -> dict[str, Any]:
        assert self.loadgen is not None
        return self.loadgen.request(command, timeout=timeout)


def with_load(body) -> dict[str, Any]:
    """Run a workload, recording the machine's load average before and after it: these cores
    are shared, and a result measured while others were busy must say so."""
    start = loadavg()
    started = time.monotonic()
    result = body()
    return {"load_start": start, "load_end": loadavg(), "seconds": round(time.monotonic() - started, 1), **result}


def median(measurements: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The measurement with the median `key`, of a few repeated on a shared machine: a burst of
    other work during one of them does not decide the result. One without a value ranks last."""
    ranked = sorted(measurements, key=lambda measured: math.inf if measured[key] is None else measured[key])
    return ranked[len(ranked) // 2]


def cpu_share(loadgen_cpu: float, server_cpu: float) -> float | None:
    """The load generator's share of the CPU the two used together while measuring."""
    total = loadgen_cpu + server_cpu
    return round(loadgen_cpu / total, 3) if total > 0 else None


def delivery_rate(counted: dict[str, Any], start_ns: int, server_cpu: float) -> dict[str, Any]:
    """What the load generator counted, as a result: deliveries per second from `start_ns` (when
    the first event left) to the last delivery, latency, and who used how much CPU."""
    span = max(1, counted["last_ns"] - start_ns) / 1e9
    return {
        "received": counted["received"],
        "deliveries_per_s": round(counted["received"] / span),
        "latency_ms": counted["latency_ms"],
        "server_cpu_cores": round(server_cpu / counted["wall_s"], 2),
        "loadgen_cpu_share": cpu_share(counted["cpu_s"], server_cpu),
    }


class Profiler:
    """py-spy sampling one process while a measurement runs (`--profile`): collapsed stacks in
    the raw directory, the input of any flame-graph tool and of `python -m bench.profile_top`.
    A no-op when profiling is off. Blocking mode: the non-blocking sampler misattributes time
    spent in uvloop's C code to whichever Python frame was last on the stack."""

    def __init__(self, run: Run, process: Child, label: str) -> None:
        self.run = run
        self.process = process
        self.label = label
        self.spy: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Profiler:
        # Only Python processes can be sampled by py-spy (not Centrifugo, not Redis).
        if self.run.profile and self.process.argv[0] == sys.executable:
            output = self.run.raw / f"profile-{self.label}.txt"
            self.spy = subprocess.Popen(
                [
                    str(Path(sys.executable).with_name("py-spy")),
                    "record",
                    "--pid",
                    str(self.process.pid),
                    "--format",
                    "raw",
                    "--rate",
                    "200",
                    # Native frames show what Python frames hide: the write syscall, the collector.
                    "--native",
                    "--output",
                    str(output),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.spy is not None:
            self.spy.send_signal(signal.SIGINT)
            self.spy.wait(30)
