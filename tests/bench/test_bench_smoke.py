"""A seconds-long run of the benchmark harness, so that `make bench` cannot rot unnoticed.

It runs workload 1 at toy size, TaskSync against the plain `websockets` server, through the same
code `make bench` runs, and checks that the results are well formed. It asserts nothing about
speed: the test suite is never a benchmark.
"""

from __future__ import annotations

import json

from bench.plan import SMOKE
from bench.run import benchmark


def test_harness_measures_tasksync_and_a_peer(tmp_path):
    results = benchmark(SMOKE, ["delivery"], tmp_path)

    assert results["failures"] == {}
    assert json.loads((tmp_path / "results.json").read_text()) == results
    assert (tmp_path / "results.png").read_bytes().startswith(b"\x89PNG")
    assert "### 1. Delivery engine" in (tmp_path / "results.md").read_text()

    workload = results["workloads"]["delivery_engine"]
    assert len(workload["load_start"]) == len(workload["load_end"]) == 3
    servers = {row["server"] for row in workload["cases"]}
    assert servers == {"tasksync", "websockets"}
    for row in workload["cases"]:
        for phase in ("saturation", "fixed_rate"):
            measured = row[phase]
            assert measured["received"] == measured["expected"] > 0, (row["server"], row["mode"], phase)
            assert measured["deliveries_per_s"] > 0
            assert measured["latency_ms"]["p50"] <= measured["latency_ms"]["p99"]
            # None when both processes used less CPU than /proc can resolve (10 ms), as at toy size.
            share = measured["loadgen_cpu_share"]
            assert share is None or 0 <= share <= 1

    measured_targets = {target["target"] for target in results["targets"]}
    assert {"deliveries/s vs websockets", "p99 vs websockets"} <= measured_targets
