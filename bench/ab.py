"""`python -m bench.ab`: two versions of the service measured in turns, with this harness.

This machine's speed moves by more than most changes are worth, within the hour: a version
measured after another can win or lose on the minute alone. So each turn runs both versions
back to back, and the turns repeat; every target row of every run is printed side by side, turn
by turn, so a difference that holds in every turn can be told from one that does not. The order
alternates (A then B, B then A, ...): the second run of a turn meets what the first left behind
(sockets in TIME_WAIT, a machine busier or warmer), and should not always be the same version.

A version is a git revision (`HEAD~1`, a branch, a commit) whose `service/` is extracted with
`git archive`, or `WORKTREE` for the checkout's own `service/` as it is now. Each run is
`python -m bench.run --out ...` with that `service/` first on PYTHONPATH (bench/README.md), so
the harness, the peers and the load generator are this checkout's in every run.

    .venv/bin/python -m bench.ab --only storm HEAD~1 WORKTREE
    .venv/bin/python -m bench.ab --only redis --turns 3 main my-branch
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

from .plan import PLANS
from .procs import REPO
from .run import RESULTS, WORKLOADS

WORKTREE = "WORKTREE"


def service_tree(revision: str, into: Path) -> Path:
    """The `service/` directory of `revision` (WORKTREE: the checkout's own), for PYTHONPATH."""
    if revision == WORKTREE:
        return REPO / "service"
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", revision, "service"],
        check=True,
        capture_output=True,
    ).stdout
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "service"


def turn_order(versions: list[str], turn: int) -> list[str]:
    """The versions in the order turn `turn` (from 1) runs them: as given in odd turns, reversed
    in even ones, so that no version is always the second of a turn."""
    return versions if turn % 2 else versions[::-1]


def _label(revision: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", revision)


def measure(tree: Path, out: Path, plan: str, only: str) -> dict[str, Any]:
    """One `bench.run` of the `tasksync` in `tree`; its results, or what failed."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")]))}
    argv = [sys.executable, "-m", "bench.run", "--plan", plan, "--only", only, "--out", str(out)]
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True)
    results_file = out / "results.json"
    if not results_file.exists():
        return {"failures": {"bench.run": done.stderr[-2000:]}, "targets": []}
    results: dict[str, Any] = json.loads(results_file.read_text())
    return results


def table(labels: list[str], runs: list[tuple[str, int, dict[str, Any]]]) -> str:
    """Every target row, one column per run in the order they ran (A1 B1 B2 A2 ...)."""
    columns = [f"{'AB'[labels.index(label)]}{turn}" for label, turn, _ in runs]
    # Rows by target and its place among the run's targets of that name: a case may name what
    # differs between runs (how many events a storm published).
    rows: dict[tuple[str, int], list[str]] = {}
    names: dict[tuple[str, int], str] = {}
    for index, (_, _, results) in enumerate(runs):
        seen: dict[str, int] = {}
        for target in results.get("targets", []):
            key = (target["target"], seen.setdefault(target["target"], 0))
            seen[target["target"]] += 1
            names.setdefault(key, f"{target['target']} ({target['case']})")
            row = rows.setdefault(key, ["-"] * len(runs))
            if target["measured"] is not None:
                row[index] = f"{target['measured']:.3g}{target['unit']}"
    lines = [f"A = {labels[0]}, B = {labels[1]}", "", "| target | " + " | ".join(columns) + " |"]
    lines.append("|---|" + "---|" * len(columns))
    lines += [f"| {names[key]} | " + " | ".join(values) + " |" for key, values in rows.items()]
    failed = [column for column, (_, _, results) in zip(columns, runs, strict=True) if results.get("failures")]
    if failed:
        lines += ["", f"failed runs: {', '.join(failed)} (their raw directories hold the logs)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ab", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("a", help="the first version: a git revision, or WORKTREE")
    parser.add_argument("b", help="the second version")
    parser.add_argument("--only", required=True, help=f"comma-separated workloads: {','.join(WORKLOADS)}")
    parser.add_argument("--turns", type=int, default=2, help="A and B in turns, this many (default 2)")
    parser.add_argument("--plan", choices=sorted(PLANS), default="full")
    parser.add_argument("--out", type=Path, help="where the runs go (default: bench/results/raw/ab-<time>)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.only.split(",") if name not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workloads {unknown}; choose from {list(WORKLOADS)}")
    if args.a == args.b:
        parser.error("A and B are the same version")
    out = args.out or RESULTS / "raw" / f"ab-{time.strftime('%Y%m%d-%H%M%S')}"
    labels = [args.a, args.b]
    trees = {label: service_tree(label, out / f"tree-{_label(label)}") for label in labels}
    runs: list[tuple[str, int, dict[str, Any]]] = []
    for turn in range(1, args.turns + 1):
        for label in turn_order(labels, turn):
            print(f"bench.ab: turn {turn}, {label} ...", file=sys.stderr, flush=True)
            results = measure(trees[label], out / f"{_label(label)}-{turn}", args.plan, args.only)
            runs.append((label, turn, results))
    report = table(labels, runs)
    (out / "ab.md").write_text(report + "\n")
    print(report)
    print(f"bench.ab: runs in {out}", file=sys.stderr)
    return 1 if any(results.get("failures") for _, _, results in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
