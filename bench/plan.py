"""How big each workload is: the full run that `make bench` does, a quick one for iterating, and
the smoke the test suite runs so the harness cannot rot: it starts every server and every
variant of every workload once, at toy size, so a server that cannot start fails the tests."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Plan:
    name: str
    # Workload 1: socket counts, deliveries per saturation push (and per push of the uvicorn
    # variants, which only compare TaskSync with itself), seconds of the fixed-rate phase.
    engine_sockets: tuple[int, ...]
    engine_deliveries: int
    # Saturation is measured in this many pushes of equal size (the median counts).
    saturation_pushes: int
    variant_deliveries: int
    latency_seconds: float
    engine_peers: tuple[str, ...]
    # TaskSync under each uvicorn WebSocket implementation and loop, at the largest socket count.
    variants: bool
    # Workloads 2 and 6: sockets and events per saturation run.
    e2e_sockets: int
    e2e_events: int
    # Workload 3: idle sockets; workload 4: handshakes; workload 5: clients and events per second.
    memory_sockets: int
    # Seconds between connecting the sockets and reading the server's resident memory.
    memory_settle_seconds: float
    handshakes: int
    storm_clients: int
    storm_rate: float
    # Workload 7: events per measurement of the in-process ingest path, for each kind of body.
    ingest_events: int
    # Handshakes and the storm are measured this many times, and the median counts: one
    # measurement moved by 20-30 % with the load of the shared machine.
    runs: int


FULL = Plan(
    name="full",
    engine_sockets=(1_000, 10_000),
    engine_deliveries=300_000,
    saturation_pushes=5,
    variant_deliveries=150_000,
    latency_seconds=3.0,
    engine_peers=("tasksync", "websockets", "naive-litestar", "picows"),
    variants=True,
    e2e_sockets=10_000,
    e2e_events=100_000,
    memory_sockets=10_000,
    memory_settle_seconds=2.0,
    handshakes=6_000,
    storm_clients=5_000,
    storm_rate=200.0,
    ingest_events=20_000,
    runs=3,
)

QUICK = Plan(
    name="quick",
    engine_sockets=(200, 2_000),
    engine_deliveries=40_000,
    saturation_pushes=3,
    variant_deliveries=20_000,
    latency_seconds=1.0,
    engine_peers=FULL.engine_peers,
    variants=True,
    e2e_sockets=1_000,
    e2e_events=10_000,
    memory_sockets=2_000,
    memory_settle_seconds=2.0,
    handshakes=1_000,
    storm_clients=500,
    storm_rate=50.0,
    ingest_events=5_000,
    runs=3,
)

SMOKE = Plan(
    name="smoke",
    engine_sockets=(20,),
    engine_deliveries=400,
    saturation_pushes=1,
    variant_deliveries=400,
    latency_seconds=0.3,
    engine_peers=FULL.engine_peers,
    variants=True,
    e2e_sockets=20,
    e2e_events=200,
    memory_sockets=50,
    # Nothing is read from the smoke's memory figures; only that every server took the sockets.
    memory_settle_seconds=0.1,
    handshakes=50,
    storm_clients=20,
    storm_rate=20.0,
    ingest_events=200,
    runs=1,
)

PLANS = {plan.name: plan for plan in (FULL, QUICK, SMOKE)}
