"""bench/redis_capacity.py, the measurement docs/scaling.md extrapolates from, at toy size against
a real redis-server: it runs to the end and reports every figure the docs quote."""

from __future__ import annotations

import json
import subprocess
import sys

from bench.procs import REPO


def test_redis_capacity_reports_every_figure_scaling_md_quotes():
    finished = subprocess.run(
        [sys.executable, "-m", "bench.redis_capacity", "--users", "5", "--events", "300", "--subscriptions", "30"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(finished.stdout)
    store, subscribe = result["store"], result["subscribe"]
    assert store["events"] == 300 and store["users"] == 5
    for figure in (
        "redis_cpu_us_per_event",
        "redis_usec_per_script_call",
        "used_memory_bytes_per_event",
        "history_bytes_per_entry",
        "history_bytes_per_user_fixed",
        "dedupe_bytes_per_event",
        "head_bytes_per_user",
    ):
        assert store[figure] > 0, figure
    assert subscribe["subscriptions"] == 30
    assert subscribe["subscriptions_per_s"] > 0 and subscribe["used_memory_bytes_per_subscription"] > 0
