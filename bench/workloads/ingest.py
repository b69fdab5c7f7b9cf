"""Workload 7, the HTTP ingest path in process: the CPU `POST /v1/events` costs per event once
its body is read (decoding and validation, the toast hook, the embedded broker), without HTTP,
sockets or a load generator. `python -m bench.ingest` measures it, in a process of its own so
that a `PYTHONPATH` pointing at another tree measures that tree's `tasksync`, as every server
of the other workloads does. Workload 2 measures the same path end to end.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

from ..harness import Run
from ..procs import Child, ChildFailed, python_module

# Guards against a hang only: a full run's measurements take seconds.
TIMEOUT_S = 600


def run_ingest(run: Run) -> dict[str, Any]:
    out = run.raw / "http-ingest.json"
    argv = python_module(
        "bench.ingest", "--events", str(run.plan.ingest_events), "--runs", str(run.plan.runs), "--out", str(out)
    )
    child = run.start(Child("http-ingest", argv, run.raw))
    assert child.process is not None
    try:
        returncode = child.process.wait(TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ChildFailed(f"http-ingest took longer than {TIMEOUT_S} s; see {child.log_path}") from None
    finally:
        run.stop(child)
    if returncode != 0:
        raise ChildFailed(f"http-ingest exited with {returncode}: {child.log_path.read_text(errors='replace')[-3000:]}")
    return json.loads(out.read_text())
