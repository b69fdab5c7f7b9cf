"""`python -m bench.run`: run the benchmarks and write their results.

Every run writes its results, logs and profiles under bench/results/raw/, which git ignores. A
full run of everything (`make bench`) in which every workload succeeded is then published: its
results are copied to bench/results/results.{json,md,png} and its tables rewrite the generated
block of docs/performance.md. A run in which any workload failed exits 1 and publishes nothing:
a partial result never stands as the published one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
import traceback
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from . import centrifugo, report
from .harness import Run, with_load
from .plan import PLANS, Plan
from .procs import REPO, loadavg, raise_file_limit
from .workloads.delivery import run_delivery
from .workloads.end_to_end import run_end_to_end, run_redis_cost
from .workloads.handshakes import run_handshakes
from .workloads.ingest import run_ingest
from .workloads.memory import run_memory
from .workloads.storm import run_storm

RESULTS = REPO / "bench" / "results"
DOC = REPO / "docs" / "performance.md"

# Name on the command line -> (key in the results, function). In the order they run.
WORKLOADS = {
    "delivery": ("delivery_engine", run_delivery),
    "e2e": ("end_to_end", run_end_to_end),
    "redis": ("redis_broker", run_redis_cost),
    "memory": ("memory", run_memory),
    "handshakes": ("handshakes", run_handshakes),
    "storm": ("reconnect_storm", run_storm),
    "ingest": ("http_ingest", run_ingest),
}
PACKAGES = (
    "tasksync",
    "litestar",
    "uvicorn",
    "websockets",
    "wsproto",
    "uvloop",
    "httptools",
    "picows",
    "msgspec",
    "redis",
)


def machine() -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["centrifugo"] = centrifugo.VERSION
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
    }


def benchmark(plan: Plan, names: list[str], out: Path, *, profile: bool = False) -> dict[str, Any]:
    """Run the named workloads under `plan`; write results.json, results.md and results.png in
    `out`, and the logs and profiles in `out`/raw. A workload that fails is recorded under
    `failures` and the next one runs."""
    raise_file_limit()
    raw = out / "raw"
    started = datetime.now(UTC)
    results: dict[str, Any] = {
        "schema": 1,
        "plan": plan.name,
        "started_at": started.isoformat(timespec="seconds"),
        "load_start": loadavg(),
        "machine": machine(),
        "workloads": {},
        "failures": {},
    }
    run = Run(plan, raw, profile=profile)
    try:
        run.start_loadgen()
        for name in names:
            key, body = WORKLOADS[name]
            print(f"bench: {name} ...", file=sys.stderr, flush=True)
            try:
                results["workloads"][key] = with_load(lambda body=body: body(run))
            except Exception:
                results["failures"][key] = traceback.format_exc()
                print(results["failures"][key], file=sys.stderr)
                # A failed workload may leave servers and a half-answered command behind; the next
                # one starts clean, with a new load generator.
                run.close()
                run.start_loadgen()
    finally:
        run.close()
    results["load_end"] = loadavg()
    results["duration_s"] = round((datetime.now(UTC) - started).total_seconds(), 1)
    results["targets"] = report.evaluate(results["workloads"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(report.markdown(results) + "\n")
    report.chart(results, out / "results.png")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, about two minutes")
    parser.add_argument("--plan", choices=sorted(PLANS), help="full (default), quick or smoke")
    parser.add_argument("--only", help=f"comma-separated workloads: {','.join(WORKLOADS)}")
    parser.add_argument("--out", type=Path, help="output directory (default: bench/results for a full run)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="record py-spy profiles of TaskSync under load into the raw directory (slows it down)",
    )
    args = parser.parse_args(argv)
    plan = PLANS[args.plan or ("quick" if args.quick else "full")]
    names = args.only.split(",") if args.only else list(WORKLOADS)
    unknown = [name for name in names if name not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workloads {unknown}; choose from {list(WORKLOADS)}")
    official = plan.name == "full" and not args.only and args.out is None and not args.profile
    out = args.out or RESULTS / "raw" / f"{plan.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    results = benchmark(plan, names, out, profile=args.profile)
    print((out / "results.md").read_text())
    if results["failures"]:
        unpublished = "; nothing published" if official else ""
        print(f"bench: failed: {', '.join(results['failures'])}; results in {out}{unpublished}", file=sys.stderr)
        return 1
    if official:
        publish(out)
        print(f"bench: published to {RESULTS} and {DOC}", file=sys.stderr)
    print(f"bench: results in {out}", file=sys.stderr)
    return 0


def publish(out: Path) -> None:
    """Make a complete full run the published one: its tables in docs/performance.md (checked
    first, so a document without its generated block changes nothing) and its files in
    bench/results."""
    report.update_doc(DOC, (out / "results.md").read_text(), "../bench/results/results.png")
    for name in ("results.json", "results.md", "results.png"):
        shutil.copyfile(out / name, RESULTS / name)


if __name__ == "__main__":
    sys.exit(main())
