"""bench/redis_capacity.py, the measurement docs/scaling.md extrapolates from, at toy size against
a real redis-server (and a replica of it): it runs to the end and reports every figure the docs
quote."""

from __future__ import annotations

import json
import subprocess
import sys

from bench.procs import REPO

TOY_SIZES = ["--users", "5", "--events", "300", "--subscriptions", "30", "--replicated-batches", "8"]


def test_redis_capacity_reports_every_figure_scaling_md_quotes():
    finished = subprocess.run(
        [sys.executable, "-m", "bench.redis_capacity", *TOY_SIZES],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(finished.stdout)
    store, subscribe = result["store"], result["subscribe"]
    assert store["events"] == 300 and store["users"] == 5
    # /proc counts CPU in 10 ms ticks: at toy size Redis may not have used one.
    assert store["redis_cpu_us_per_event"] >= 0
    for figure in (
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
    unreplicated, waited = result["replicate"]["wait_replicas_0"], result["replicate"]["wait_replicas_1"]
    assert unreplicated["replication_bytes_per_event"] > 0
    # Loopback replication may keep up with every sample: behind is measured, not bounded below.
    assert unreplicated["replica_behind_events_max"] >= 0
    assert 0 < waited["batch_ms_p50"] <= waited["batch_ms_p99"]
