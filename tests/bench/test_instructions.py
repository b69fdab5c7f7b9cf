"""`python -m bench.instructions` counts the instructions a version of the service executes per
handshake, under callgrind."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from bench.instructions import instructions_in
from bench.procs import REPO

pytestmark = pytest.mark.timeout(300)


def test_a_dump_s_count_is_its_summary_line():
    assert instructions_in("version: 1\ncmd: python\nevents: Ir\nsummary: 1209098305\n") == 1_209_098_305
    assert instructions_in("events: Ir\nfl=(1) x.c\n0 12\ntotals: 99\n") == 99
    with pytest.raises(ValueError, match="not a callgrind dump"):
        instructions_in("events: Ir\n")


def test_a_version_is_counted_per_handshake_under_callgrind():
    done = subprocess.run(
        [sys.executable, "-m", "bench.instructions", "--count", "20", "--warm-up", "20", "--turns", "1", "WORKTREE"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| WORKTREE |")]
    assert len(rows) == 1, done.stdout
    count = re.fullmatch(r"\| WORKTREE \| ([\d.]+) M \|", rows[0])
    assert count is not None, rows[0]
    # A handshake with its close is about a million instructions (more per handshake in so short
    # a count, which the server's periodic work weighs on): nothing near zero, nothing absurd.
    assert 0.5 < float(count.group(1)) < 10, rows[0]
