"""A real Prometheus scrapes a running service: it counts the sockets the test opened, and the
dashboard's and the alerts' queries run against the live series."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from tasksync.client import SyncClient
from tasksync.protocol import TaskUpdate
from tests.chart.charttools import (
    DASHBOARD_VARIABLES,
    NAMESPACE,
    RELEASE,
    Tools,
    alert_expressions,
    dashboard_queries,
    grafana_to_promql,
)
from tests.chart.prometheus_server import PrometheusServer
from tests.support.events import cloudevent, payload
from tests.support.servers import ServiceProcess
from tests.support.waiting import eventually

SOCKETS = 5


@pytest.fixture
def prometheus(tools: Tools, tmp_path: Path) -> Iterator[Callable[[ServiceProcess], PrometheusServer]]:
    started: list[PrometheusServer] = []

    def start(service: ServiceProcess) -> PrometheusServer:
        server = PrometheusServer(
            tools.prometheus,
            tmp_path,
            job=RELEASE,
            targets=[f"127.0.0.1:{service.port}"],
            target_labels={"namespace": NAMESPACE, "pod": f"{RELEASE}-0"},
        )
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()
        # Captured by pytest and shown only when the test fails.
        print(f"--- log of prometheus on port {server.port} ---\n{server.log()}")


async def active_connections(prometheus: PrometheusServer, promql: str) -> float | None:
    result = await prometheus.query(promql)
    return float(result[0]["value"][1]) if result else None


async def test_prometheus_counts_the_sockets_the_test_opened(start_service, prometheus) -> None:
    service = start_service("--dev")
    server = prometheus(service)
    # The alerts' selector, and the dashboard's "Active connections" stat as Grafana sends it.
    by_alert_selector = f'sum(tasksync_connections_active{{job="{RELEASE}", namespace="{NAMESPACE}"}})'
    (stat,) = [q for q in dashboard_queries() if q.panel == "Active connections" and "by (pod)" not in q.expr]
    by_dashboard = grafana_to_promql(stat.expr, DASHBOARD_VARIABLES)

    clients = [SyncClient(service.ws, user_id=f"user-{n}") for n in range(SOCKETS)]
    try:
        for client in clients:
            await client.connect()
        for promql in (by_alert_selector, by_dashboard):
            assert await eventually(
                lambda promql=promql: _equals(server, promql, SOCKETS), timeout=30, what=f"{promql} == {SOCKETS}"
            )

        await clients[0].close()
        assert await eventually(
            lambda: _equals(server, by_dashboard, SOCKETS - 1), timeout=30, what=f"{by_dashboard} == {SOCKETS - 1}"
        )
    finally:
        for client in clients:
            await client.close()


async def _equals(server: PrometheusServer, promql: str, expected: int) -> bool:
    return await active_connections(server, promql) == expected


async def make_traffic(service: ServiceProcess) -> None:
    """One event delivered through the Dapr route, one handshake refused, one socket closed by
    its client: enough for the labelled series the dashboard aggregates to exist."""
    async with SyncClient(service.ws, user_id="alice") as alice:
        async with httpx.AsyncClient() as http:
            response = await http.post(
                service.http + "/dapr/task-events",
                json=cloudevent(payload("alice")),
                headers={"content-type": "application/cloudevents+json"},
            )
        assert response.json() == {"status": "SUCCESS"}
        assert isinstance(await alice.receive(), TaskUpdate)
    async with connect(f"{service.ws}?user_id=bob&since=1") as refused:
        await refused.wait_closed()


async def test_dashboard_and_alert_queries_run_against_live_series(start_service, prometheus, helm) -> None:
    service = start_service("--dev")
    server = prometheus(service)
    refused = f'tasksync_handshakes_refused_total{{job="{RELEASE}"}}'
    # A labelled counter's series appears at its first count; rate() sees increases only after
    # that, so traffic comes twice, with a scrape in between.
    await make_traffic(service)
    await eventually(lambda: server.query(refused), timeout=30, what="the labelled series to be scraped")
    await make_traffic(service)
    await eventually(lambda: server.query(f"{refused} == 2"), timeout=30, what="the second round to be scraped")

    # promtool proves the syntax; only evaluation over real series shows matching errors
    # (many-to-many, or `or vector(0)` meeting labelled series) and misnamed labels.
    for query in dashboard_queries():
        await server.query(grafana_to_promql(query.expr, DASHBOARD_VARIABLES))
    for expr in alert_expressions(helm):
        await server.query(expr)

    # Each round ended one attempt in an error (the refused handshake) and one normally (the
    # client's close): the error ratio is one half.
    errors = next(q for q in dashboard_queries() if q.panel == "Connection error ratio")
    (ratio,) = await server.query(grafana_to_promql(errors.expr, DASHBOARD_VARIABLES))
    assert float(ratio["value"][1]) == pytest.approx(0.5)
