"""Workloads 2 and 6, end to end: events in over HTTP, out through sockets.

Workload 2 compares TaskSync (embedded broker; events through `POST /v1/events` batches and,
separately, through the Dapr bulk route) with Centrifugo (personal channels, HTTP batch publish):
the same sockets (two per user), the same events, the same machine. Saturation first, then every
target at one fixed rate, half the slowest saturation, for latency.

Workload 6 runs the HTTP route of workload 2 on every engine that spreads users over replicas,
back to back: the embedded broker on one process as the reference; then, on two replicas with
each user's two sockets on different replicas, so every event crosses Redis to reach both: the
Redis broker on one Redis, the Redis broker on a Redis Cluster of 3 masters (one replica each),
and Centrifugo's Redis engine on the same one Redis, publishing the same events.
"""

from __future__ import annotations

from typing import Any

from .. import centrifugo
from ..harness import Profiler, Run, delivery_rate
from ..procs import Child, Redis, RedisCluster

BATCH_SATURATION = 100
BATCH_FIXED_RATE = 10
SATURATION_CONCURRENCY = 4
FIXED_RATE_SECONDS_FACTOR = 2  # fixed-rate phases last this many times the plan's latency_seconds


class Target:
    """A server (or replicas) under test plus how the load generator reaches it."""

    def __init__(
        self,
        name: str,
        processes: list[Child],
        ws_urls: list[str],
        http_urls: list[str],
        *,
        protocol: str = "plain",
        shared: tuple[Child, ...] = (),
    ) -> None:
        self.name = name
        # Started for this target and stopped with it.
        self.processes = processes
        # Outlive the target (Redis) but their CPU is part of its cost.
        self.shared = shared
        self.ws_urls = ws_urls
        self.http_urls = http_urls
        self.protocol = protocol

    def cpu_seconds(self) -> float:
        return sum(process.cpu_seconds() for process in [*self.processes, *self.shared])


def connect(run: Run, target: Target, sockets: int) -> float:
    connected = run.ask(
        {
            "cmd": "connect",
            "urls": target.ws_urls,
            "mode": "routed",
            "sockets": sockets,
            "protocol": target.protocol,
            "secret": centrifugo.SECRET,
        }
    )
    if connected["ready"] < sockets:
        raise RuntimeError(f"{target.name}: only {connected['ready']} of {sockets} sockets ready: {connected}")
    return round(connected["seconds"], 2)


def measure(run: Run, target: Target, publish_as: str, sockets: int, events: int, rate: float | None) -> dict[str, Any]:
    """Publish `events` events (as fast as the target takes them, or at `rate` deliveries/s) and
    count their deliveries: two per event, one per socket of its user."""
    run.ask({"cmd": "reset"})
    cpu_before = target.cpu_seconds()
    published = run.ask(
        {
            "cmd": "publish",
            "target": publish_as,
            "urls": target.http_urls,
            "mode": "routed",
            "sockets": sockets,
            "events": events,
            "api_key": centrifugo.API_KEY,
            "batch": BATCH_SATURATION if rate is None else BATCH_FIXED_RATE,
            "concurrency": SATURATION_CONCURRENCY,
            "rate": rate / 2 if rate else None,
        },
        timeout=900,
    )
    expected = published["published"] * 2
    counted = run.ask({"cmd": "wait", "deliveries": expected, "timeout": 10 + expected / 5_000}, timeout=900)
    server_cpu = target.cpu_seconds() - cpu_before
    result = {
        "events": events,
        "published": published["published"],
        "publish_errors": published["errors"],
        "first_error": published["first_error"],
        "expected": expected,
        **delivery_rate(counted, published["start_ns"], server_cpu),
    }
    if rate is not None:
        result["offered_per_s"] = round(rate)
    return result


def tasksync_target(run: Run) -> Target:
    child, port = run.tasksync("tasksync", "--dev")
    return Target("tasksync", [child], [f"ws://127.0.0.1:{port}/ws"], [f"http://127.0.0.1:{port}"])


def centrifugo_target(run: Run) -> Target:
    child, port = centrifugo.child(run.raw)
    run.start(child).wait_for_port(port)
    return Target(
        "centrifugo",
        [child],
        [f"ws://127.0.0.1:{port}/connection/websocket"],
        [f"http://127.0.0.1:{port}"],
        protocol="centrifugo",
    )


def replicas_target(run: Run, name: str, redis: Redis | RedisCluster, broker: str) -> Target:
    """Two TaskSync replicas on the broker `broker`, whose Redis is `redis`."""
    replicas = [run.tasksync(f"{name}-{i}", "--dev", "--broker", broker) for i in range(2)]
    return Target(
        name,
        [child for child, _ in replicas],
        [f"ws://127.0.0.1:{port}/ws" for _, port in replicas],
        [f"http://127.0.0.1:{port}" for _, port in replicas],
        shared=(redis,),
    )


def centrifugo_redis_target(run: Run, redis: Redis) -> Target:
    """Two Centrifugo nodes on the Redis engine of `redis`."""
    nodes = [centrifugo.child(run.raw, redis.url) for _ in range(2)]
    for child, port in nodes:
        run.start(child).wait_for_port(port)
    return Target(
        "centrifugo-redis",
        [child for child, _ in nodes],
        [f"ws://127.0.0.1:{port}/connection/websocket" for _, port in nodes],
        [f"http://127.0.0.1:{port}" for _, port in nodes],
        protocol="centrifugo",
        shared=(redis,),
    )


def passes(run: Run, starters: dict[str, Any], routes: dict[str, list[tuple[str, str]]]) -> dict[str, Any]:
    """Saturation for every route of every target, then every route at one fixed rate.

    `starters[name]()` starts a target; `routes[name]` lists how events enter it as (result
    label, publisher), since a target may take events two ways on the same sockets."""
    sockets = run.plan.e2e_sockets
    results: dict[str, Any] = {}

    def each(rate_for) -> dict[str, Any]:
        measured: dict[str, Any] = {}
        for name, start in starters.items():
            target = start()
            try:
                connect_s = connect(run, target, sockets)
                for label, publish_as in routes[name]:
                    rate = rate_for()
                    events = (
                        run.plan.e2e_events
                        if rate is None
                        else max(20, int(rate / 2 * run.plan.latency_seconds * FIXED_RATE_SECONDS_FACTOR))
                    )
                    with Profiler(run, target.processes[0], f"e2e-{label}-{'fixed' if rate else 'saturation'}"):
                        result = measure(run, target, publish_as, sockets, events, rate)
                    measured[label] = {"connect_s": connect_s, **result}
                run.ask({"cmd": "close"})
            finally:
                for process in target.processes:
                    run.stop(process)
        return measured

    saturation = each(lambda: None)
    rate = 0.5 * min((r["deliveries_per_s"] for r in saturation.values() if r["deliveries_per_s"]), default=1_000)
    fixed = each(lambda: rate)
    for route in saturation:
        results[route] = {"saturation": saturation[route], "fixed_rate": fixed[route]}
    return {"sockets": sockets, "fixed_rate_per_s": round(rate), "routes": results}


def run_end_to_end(run: Run) -> dict[str, Any]:
    # Built on first use, before anything is measured; without it the workload fails.
    centrifugo.ensure_binary()
    starters = {"tasksync": lambda: tasksync_target(run), "centrifugo": lambda: centrifugo_target(run)}
    routes = {
        "tasksync": [("tasksync-http", "tasksync-http"), ("tasksync-dapr", "tasksync-dapr")],
        "centrifugo": [("centrifugo", "centrifugo")],
    }
    return passes(run, starters, routes)


def run_redis_cost(run: Run) -> dict[str, Any]:
    centrifugo.ensure_binary()
    redis = run.start(Redis(run.raw, run.raw / "redis-e2e"))
    # No replicas, as the one Redis has none: what is compared is users spread over masters, with
    # the same write work each (a replica doubles it; the tests' cluster has them, for failover).
    cluster = run.start(RedisCluster(run.raw / "redis-cluster-e2e", replicas_per_master=0))
    try:
        starters = {
            "embedded": lambda: tasksync_target(run),
            "redis": lambda: replicas_target(run, "tasksync-redis", redis, redis.url),
            "redis-cluster": lambda: replicas_target(run, "tasksync-redis-cluster", cluster, cluster.url),
            "centrifugo-redis": lambda: centrifugo_redis_target(run, redis),
        }
        routes = {name: [(name, "tasksync-http")] for name in starters}
        routes["centrifugo-redis"] = [("centrifugo-redis", "centrifugo")]
        result = passes(run, starters, routes)
    finally:
        run.stop(cluster)
        run.stop(redis)
    return result
