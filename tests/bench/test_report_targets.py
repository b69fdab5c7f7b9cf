"""bench/report.py's targets that decide more than speed: a TaskSync route that lost deliveries
fails its target in any run, however fast it was; a peer's losses are shown, not counted."""

from __future__ import annotations

from bench.report import evaluate


def _route(expected: int, received: int) -> dict:
    run = {"expected": expected, "received": received, "deliveries_per_s": 1000, "latency_ms": {"p99": 1.0}}
    return {"saturation": run, "fixed_rate": dict(run)}


def _missing(workloads: dict) -> dict[str, tuple[int, bool]]:
    return {
        target["case"].split(",")[0]: (target["measured"], target["met"])
        for target in evaluate(workloads)
        if target["target"] == "deliveries missing"
    }


def test_a_tasksync_route_that_lost_deliveries_fails_and_a_peer_is_not_judged():
    workloads = {
        "end_to_end": {"routes": {"tasksync-http": _route(100, 100), "centrifugo": _route(100, 90)}},
        "redis_broker": {"routes": {"redis": _route(100, 100), "redis-cluster": _route(100, 97)}},
    }
    assert _missing(workloads) == {"tasksync-http": (0, True), "redis": (0, True), "redis-cluster": (6, False)}


def test_more_deliveries_than_expected_count_as_none_missing():
    workloads = {"end_to_end": {"routes": {"tasksync-http": {"saturation": _route(100, 103)["saturation"]}}}}
    assert _missing(workloads) == {"tasksync-http": (0, True)}
