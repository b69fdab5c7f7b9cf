"""A benchmark run in which a workload failed exits non-zero and publishes nothing: the results
block of docs/performance.md and the files in bench/results stay as the last complete run left
them.

The run is `make bench`'s own (`python -m bench.run`, the full plan, nothing left out), in a
copy of the harness with docs/performance.md and bench/results beside it, as in the repository.
Its workloads fail the way bench/README.md's measurement of another `service/` tree would with
a tree that does not start: a `tasksync` package ahead on PYTHONPATH that cannot be imported.
Every server that workloads start then dies at once, so the full plan ends in seconds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.procs import REPO
from bench.run import WORKLOADS

BROKEN = "this tasksync tree does not start"


def published(checkout: Path) -> dict[str, bytes]:
    """What a run may only change when it publishes: the docs and the tracked results."""
    results = checkout / "bench" / "results"
    files = [checkout / "docs" / "performance.md"]
    files += [path for path in results.rglob("*") if path.is_file() and "raw" not in path.relative_to(results).parts]
    return {str(path.relative_to(checkout)): path.read_bytes() for path in files}


@pytest.mark.timeout(300)
def test_a_full_run_with_a_failed_workload_exits_1_and_publishes_nothing(tmp_path):
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO / "bench", checkout / "bench", ignore=shutil.ignore_patterns("raw", "__pycache__"))
    (checkout / "docs").mkdir()
    shutil.copy(REPO / "docs" / "performance.md", checkout / "docs")
    service_tree = tmp_path / "service"
    (service_tree / "tasksync").mkdir(parents=True)
    (service_tree / "tasksync" / "__init__.py").write_text(f"raise ImportError({BROKEN!r})\n")
    before = published(checkout)
    assert "docs/performance.md" in before and "bench/results/results.md" in before

    done = subprocess.run(
        [sys.executable, "-m", "bench.run"],
        cwd=checkout,
        env={**os.environ, "PYTHONPATH": str(service_tree)},
        capture_output=True,
        text=True,
        timeout=280,
    )

    assert done.returncode == 1, done.stderr[-3000:]
    # Every workload ran, and failed for the reason given to it.
    for name in WORKLOADS:
        assert f"bench: {name} ..." in done.stderr
    assert done.stderr.count(BROKEN) >= len(WORKLOADS), done.stderr[-3000:]
    after = published(checkout)
    assert [name for name in sorted(before.keys() | after.keys()) if before.get(name) != after.get(name)] == []
