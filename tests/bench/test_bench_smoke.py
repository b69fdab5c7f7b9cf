"""The smoke run of the benchmark harness (plan SMOKE), so that `make bench` cannot rot unnoticed.

Every workload runs once at toy size through the same code `make bench` runs, and so starts
every server and every variant the full run starts: a peer, variant or broker whose package or
binary is missing fails here. The checks are that each one took its sockets and delivered what
was sent, and that the results are well formed; nothing about speed: the test suite is never
a benchmark.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.plan import SMOKE
from bench.run import WORKLOADS, benchmark
from bench.workloads.delivery import SERVER_MODULES, VARIANTS
from bench.workloads.memory import CLIENTS, SERVERS

# Guards against a hang only: the smoke takes well under a minute on two idle cores.
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("smoke")
    return benchmark(SMOKE, list(WORKLOADS), out), out


def delivered_all(measured: dict[str, Any]) -> bool:
    return measured["received"] == measured["expected"] > 0


def test_every_workload_runs_and_writes_its_results(smoke):
    results, out = smoke

    assert results["failures"] == {}
    assert set(results["workloads"]) == {key for key, _ in WORKLOADS.values()}
    assert json.loads((out / "results.json").read_text()) == results
    assert (out / "results.png").read_bytes().startswith(b"\x89PNG")
    markdown = (out / "results.md").read_text()
    titles = (
        "1. Delivery engine",
        "2. End to end",
        "3. Memory",
        "4. Handshakes",
        "5. Reconnect",
        "6. Redis",
        "7. HTTP",
    )
    for title in titles:
        assert f"### {title}" in markdown
    for workload in results["workloads"].values():
        assert len(workload["load_start"]) == len(workload["load_end"]) == 3


def test_the_delivery_engine_runs_every_server_and_every_variant(smoke):
    workload = smoke[0]["workloads"]["delivery_engine"]

    assert {row["server"] for row in workload["cases"]} == set(SERVER_MODULES)
    for row in workload["cases"]:
        for phase in ("saturation", "fixed_rate"):
            measured = row[phase]
            assert delivered_all(measured), (row["server"], row["mode"], phase)
            assert measured["latency_ms"]["p50"] <= measured["latency_ms"]["p99"]
            # None when both processes used less CPU than /proc can resolve (10 ms), as at toy size.
            share = measured["loadgen_cpu_share"]
            assert share is None or 0 <= share <= 1
    assert [(variant["ws"], variant["loop"]) for variant in workload["variants"]] == list(VARIANTS)
    for variant in workload["variants"]:
        assert delivered_all(variant["routed"]) and delivered_all(variant["wide"]), variant


def test_end_to_end_compares_both_routes_with_centrifugo_and_every_redis_engine_with_embedded(smoke):
    results = smoke[0]
    workloads = results["workloads"]

    for key, routes in (
        ("end_to_end", {"tasksync-http", "tasksync-dapr", "centrifugo"}),
        ("redis_broker", {"embedded", "redis", "redis-cluster", "centrifugo-redis"}),
    ):
        assert set(workloads[key]["routes"]) == routes
        for route, measured in workloads[key]["routes"].items():
            for phase in ("saturation", "fixed_rate"):
                assert measured[phase]["publish_errors"] == 0, (key, route, phase, measured[phase]["first_error"])
                assert delivered_all(measured[phase]), (key, route, phase)
    assert {
        "Redis deliveries/s vs embedded",
        "Redis deliveries/s vs Centrifugo",
        "Redis p99 vs Centrifugo",
        "Redis Cluster deliveries/s vs one Redis",
    } <= {t["target"] for t in results["targets"]}


def test_memory_holds_the_sockets_of_every_server_and_kind_of_client(smoke):
    rows = smoke[0]["workloads"]["memory"]["rows"]

    assert {(row["server"], row["client"]) for row in rows} == {
        (server, client) for server in SERVERS for client in CLIENTS
    }
    assert all(row["sockets"] == SMOKE.memory_sockets for row in rows)


def test_handshakes_complete_with_both_kinds_of_auth_and_on_the_reference_servers(smoke):
    rows = smoke[0]["workloads"]["handshakes"]["rows"]

    assert [row["auth"] for row in rows] == ["dev", "jwt", "uvicorn", "picows"]
    for row in rows:
        assert len(row["runs"]) == SMOKE.runs
        for measured in row["runs"]:
            assert (measured["completed"], measured["failed"]) == (SMOKE.handshakes, 0), measured["first_failure"]


def test_the_storm_brings_every_client_back_without_losing_an_event(smoke):
    results = smoke[0]
    storm = results["workloads"]["reconnect_storm"]

    assert len(storm["runs"]) == SMOKE.runs
    for each in storm["runs"]:
        assert each["back"] == each["clients"] == SMOKE.storm_clients, each["not_back"]
        assert each["published"] > 0
        assert (each["lost"], each["duplicates"]) == (0, 0)
    assert {"storm: 99% back and resumed", "storm: events lost"} <= {t["target"] for t in results["targets"]}


def test_http_ingest_accepts_every_event_of_both_kinds_of_body(smoke):
    results = smoke[0]
    ingest = results["workloads"]["http_ingest"]

    # The measuring process fails unless the service accepted every event it published.
    assert ingest["events"] == SMOKE.ingest_events
    assert {name: case["events_per_body"] for name, case in ingest["cases"].items()} == {"single": 1, "batch": 100}
    for case in ingest["cases"].values():
        assert len(case["each"]) == SMOKE.runs
        assert all(value > 0 for value in case["each"])
    assert "HTTP ingest CPU per event" in {t["target"] for t in results["targets"]}
