"""The chart's alerts, checked by promtool: the rules parse, and each alert fires when it should
and stays silent when it should not (alerts_test.yaml); each has a runbook."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.charttools import MINIMAL_VALUES, REPO, Helm, Tools, one

UNIT_TESTS = Path(__file__).with_name("alerts_test.yaml")
OPERATIONS_DOC = REPO / "docs" / "operations.md"
RUNBOOK_BASE = "https://docs.example.com/tasksync/operations.md"


def render_rules(helm: Helm, prometheus_rule: dict[str, Any] | None = None) -> dict[str, Any]:
    """The spec of the chart's PrometheusRule: a Prometheus rule file's content."""
    values = {**MINIMAL_VALUES, "monitoring": {"prometheusRule": {"enabled": True, **(prometheus_rule or {})}}}
    return one(helm.template(values), "PrometheusRule")["spec"]


@pytest.fixture(scope="module")
def rules(helm: Helm) -> dict[str, Any]:
    return render_rules(helm, {"runbookBaseUrl": RUNBOOK_BASE})


def alerts(rules: dict[str, Any]) -> list[dict[str, Any]]:
    return [rule for group in rules["groups"] for rule in group["rules"] if "alert" in rule]


def promtool(tools: Tools, *args: str, cwd: Path) -> str:
    result = subprocess.run([tools.promtool, *args], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_promtool_checks_the_rules(tools: Tools, rules: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    out = promtool(tools, "check", "rules", "rules.yaml", cwd=tmp_path)
    assert f"SUCCESS: {len(alerts(rules))} rules found" in out


def test_alerts_fire_when_they_should_and_stay_silent_otherwise(
    tools: Tools, helm: Helm, tmp_path: Path
) -> None:
    rules = render_rules(helm)
    for alert in alerts(rules):
        # promtool compares annotations verbatim; their content is checked in the tests below.
        alert.pop("annotations")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    shutil.copy(UNIT_TESTS, tmp_path / UNIT_TESTS.name)
    out = promtool(tools, "test", "rules", UNIT_TESTS.name, cwd=tmp_path)
    assert "SUCCESS" in out


def test_every_alert_has_a_firing_and_a_silent_unit_test(rules: dict[str, Any]) -> None:
    cases = [case for test in yaml.safe_load(UNIT_TESTS.read_text())["tests"] for case in test["alert_rule_test"]]
    for alert in alerts(rules):
        name = alert["alert"]
        assert any(c["alertname"] == name and c["exp_alerts"] for c in cases), f"{name} never fires"
        assert any(c["alertname"] == name and not c["exp_alerts"] for c in cases), f"{name} is never silent"


def test_every_alert_explains_itself_and_links_its_runbook(rules: dict[str, Any]) -> None:
    headings = set(re.findall(r"^### (\w+)$", OPERATIONS_DOC.read_text(), flags=re.MULTILINE))
    for alert in alerts(rules):
        name, annotations = alert["alert"], alert["annotations"]
        assert annotations["summary"].strip(), name
        assert annotations["description"].strip(), name
        assert name in headings, f"docs/operations.md has no runbook section '### {name}'"
        # GitHub-style anchor of the heading.
        assert annotations["runbook_url"] == f"{RUNBOOK_BASE}#{name.lower()}"
        assert alert["labels"]["severity"] in ("warning", "critical")


def test_thresholds_and_durations_come_from_values(helm: Helm) -> None:
    rules = render_rules(
        helm, {"alerts": {"errorRatio": {"threshold": 0.2, "for": "30m", "severity": "critical"}}}
    )
    alert = next(a for a in alerts(rules) if a["alert"] == "TaskSyncConnectionErrors")
    assert alert["expr"].rstrip().endswith("> 0.2")
    assert alert["for"] == "30m"
    assert alert["labels"]["severity"] == "critical"
    assert "runbook_url" not in alert["annotations"], "no base URL, no link"
