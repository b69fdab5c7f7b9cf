"""`python -m bench.ab` measures two versions of the service in turns: each run with the
`service/` of its own revision, the rows of every run side by side."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.ab import WORKTREE, service_tree
from bench.procs import REPO

pytestmark = pytest.mark.timeout(300)


def test_a_revision_is_measured_with_the_service_tree_it_had(tmp_path):
    tree = service_tree("HEAD", tmp_path / "head")
    committed = subprocess.run(
        ["git", "-C", str(REPO), "show", "HEAD:service/tasksync/session.py"], check=True, capture_output=True
    ).stdout
    assert (tree / "tasksync" / "session.py").read_bytes() == committed
    assert service_tree(WORKTREE, tmp_path / "unused") == REPO / "service"


def test_two_versions_run_in_turns_and_every_target_is_shown_for_each(tmp_path):
    out = tmp_path / "ab"
    done = subprocess.run(
        [sys.executable, "-m", "bench.ab", "--plan", "smoke", "--only", "ingest", "--turns", "2",
         "--out", str(out), "HEAD", WORKTREE],
        cwd=REPO, capture_output=True, text=True, timeout=280,
    )
    assert done.returncode == 0, done.stderr
    turns = [line for line in done.stderr.splitlines() if line.startswith("bench.ab: turn")]
    # The order alternates, so that neither version is always the second of a turn.
    assert turns == ["bench.ab: turn 1, HEAD ...", "bench.ab: turn 1, WORKTREE ...",
                     "bench.ab: turn 2, WORKTREE ...", "bench.ab: turn 2, HEAD ..."]
    table = (out / "ab.md").read_text()
    assert "| target | A1 | B1 | B2 | A2 |" in table
    ingest = [line for line in table.splitlines() if line.startswith("| HTTP ingest")]
    assert ingest and all("| - " not in line for line in ingest), table
    assert all((out / f"{side}-{turn}" / "results.json").exists() for side in ("HEAD", WORKTREE) for turn in (1, 2))
