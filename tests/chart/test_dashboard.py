"""The Grafana dashboard: every expression is valid PromQL (promtool checks them as recording
rules) and queries only metrics that a running service really exposes on /metrics."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.chart.charttools import (
    DASHBOARD_VARIABLES,
    Helm,
    Tools,
    alert_expressions,
    dashboard,
    dashboard_queries,
    grafana_to_promql,
)
from tests.support.servers import ServiceProcess

# TaskSync's own series, and the process_* and python_* ones prometheus_client adds.
METRIC_NAME = re.compile(r"\b(?:tasksync|process|python)_[a-z_]+\b")
SELECTOR = re.compile(r"\b(?:tasksync|process|python)_[a-z_]+\{([^}]*)\}")


def exposed_names(exposition: str) -> set[str]:
    """Metric names in a /metrics page. A labelled counter that has counted nothing yet shows
    only its HELP and TYPE lines, so TYPE lines count too; a histogram's TYPE line stands for
    its _bucket, _sum and _count series."""
    names = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def variable_queries() -> list[str]:
    return [v["definition"] for v in dashboard()["templating"]["list"] if v["type"] == "query"]


@pytest.fixture(scope="module")
def exposition() -> Iterator[str]:
    """/metrics of a freshly started service, as `tasksync serve --dev` exposes it."""
    service = ServiceProcess(args=["--dev"]).start()
    try:
        yield httpx.get(service.http + "/metrics").text
    finally:
        service.stop()


def test_the_dashboard_has_datasource_namespace_job_and_pod_variables() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["namespace"]["type"] == "query"
    # The ServiceMonitor's job label is the release's Service name: one release at a time, and
    # only the pods of that release to choose from.
    assert variables["job"]["type"] == "query"
    assert not variables["job"]["multi"] and not variables["job"]["includeAll"]
    assert variables["job"]["definition"].endswith(", job)")
    assert 'job=~"$job"' in variables["pod"]["definition"]
    assert variables["pod"]["multi"] and variables["pod"]["includeAll"]
    for panel in dashboard()["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


def test_every_panel_query_is_scoped_by_the_namespace_job_and_pod_variables() -> None:
    for query in dashboard_queries():
        selectors = SELECTOR.findall(query.expr)
        assert selectors, query.panel
        for matchers in selectors:
            assert 'namespace=~"$namespace"' in matchers, query.panel
            assert 'job=~"$job"' in matchers, query.panel
            assert 'pod=~"$pod"' in matchers, query.panel


def test_the_dashboard_shows_cpu_memory_open_files_and_versions() -> None:
    queried = {name for q in dashboard_queries() for name in METRIC_NAME.findall(q.expr)}
    assert {
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "tasksync_build_info",
    } <= queried


def test_every_dashboard_expression_is_valid_promql(tools: Tools, tmp_path: Path) -> None:
    rules = [
        {
            "record": f"tasksync:dashboard:panel_{n}_{query.ref_id}",
            "expr": grafana_to_promql(query.expr, DASHBOARD_VARIABLES),
        }
        for n, query in enumerate(dashboard_queries())
    ]
    rule_file = {"groups": [{"name": "dashboard", "rules": rules}]}
    (tmp_path / "dashboard.rules.yaml").write_text(yaml.safe_dump(rule_file))
    result = subprocess.run(
        [tools.promtool, "check", "rules", "dashboard.rules.yaml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_dashboard_and_alerts_query_only_metrics_the_service_exposes(helm: Helm, exposition: str) -> None:
    exposed = exposed_names(exposition)
    expressions = [q.expr for q in dashboard_queries()] + variable_queries() + alert_expressions(helm)
    queried = {name for expr in expressions for name in METRIC_NAME.findall(expr)}
    assert queried, "no metric found in any expression"
    assert queried - exposed == set()


def test_every_metric_the_service_exposes_is_on_the_dashboard(exposition: str) -> None:
    families = {line.split()[2] for line in exposition.splitlines() if line.startswith("# TYPE tasksync_")}
    queried = {name for q in dashboard_queries() for name in METRIC_NAME.findall(q.expr)}
    missing = {family for family in families if family not in queried and f"{family}_bucket" not in queried}
    assert missing == set()
