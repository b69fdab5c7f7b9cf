"""`python -m bench.engine_cost` measures the routed delivery path in process, sockets faked."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from bench.procs import REPO

pytestmark = pytest.mark.timeout(300)


def test_a_routed_event_is_measured_in_cpu_and_held_memory():
    done = subprocess.run(
        [sys.executable, "-m", "bench.engine_cost", "--events", "5000", "--runs", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stderr
    found = re.fullmatch(
        r"([\d.]+) µs and ([\d,]+) bytes of resident memory per routed event \(([\d.]+) µs\)\n", done.stdout
    )
    assert found is not None, done.stdout
    # Each run checks that every event reached its user's two sockets. A routed event costs
    # microseconds and holds at least its frame (about 280 bytes): nothing near zero, nothing
    # absurd.
    assert 0.5 < float(found.group(1)) < 500, done.stdout
    assert 100 < int(found.group(2).replace(",", "")) < 10_000, done.stdout
