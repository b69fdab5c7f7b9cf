"""What the chart tests drive: helm and promtool, the chart's rendered objects and its dashboard.

scripts/ensure-chart-tools.sh installs the tools when missing (helm with `go install` into a
cache outside the repository, promtool and prometheus from Debian, kubernetes-validate into the
venv) and prints their paths; `ensure_tools()` runs it and reads them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "tasksync"
CRD_DIR = CHART / "crds"
PRODUCTION_VALUES = CHART / "ci" / "production-values.yaml"
DASHBOARD = CHART / "dashboards" / "tasksync.json"
ENSURE_TOOLS = REPO / "scripts" / "ensure-chart-tools.sh"

# The release every test renders: its full name, and therefore the instance name, the Service
# (the scrape job) and the limits ConfigMap prefix, is "tasksync".
RELEASE = "tasksync"
NAMESPACE = "tasksync"

# The smallest values that install: the default auth plugin (jwt) needs a key.
MINIMAL_VALUES: dict[str, Any] = {"auth": {"jwt": {"secret": "test-secret"}}}


@dataclass(frozen=True)
class Tools:
    helm: str
    promtool: str
    prometheus: str


def ensure_tools() -> Tools:
    # Python packages go into the interpreter running the tests, whichever venv that is.
    environ = {**os.environ, "TASKSYNC_PYTHON": sys.executable}
    result = subprocess.run(
        ["bash", str(ENSURE_TOOLS)], check=True, stdout=subprocess.PIPE, text=True, env=environ
    )
    paths = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    return Tools(helm=paths["HELM"], promtool=paths["PROMTOOL"], prometheus=paths["PROMETHEUS"])


class HelmFailed(AssertionError):
    def __init__(self, args: list[str], stderr: str) -> None:
        super().__init__(f"{' '.join(args)} failed:\n{stderr}")
        self.stderr = stderr


@dataclass(frozen=True)
class Helm:
    binary: str

    def run(self, *args: str, values: dict[str, Any] | None = None, files: tuple[Path, ...] = ()) -> str:
        """Run helm with the chart's value files and `values` (last wins); stdout, or HelmFailed."""
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as extra:
            yaml.safe_dump(values or {}, extra)
            extra.flush()
            command = [self.binary, *args]
            for path in (*files, Path(extra.name)):
                command += ["--values", str(path)]
            result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise HelmFailed(command, result.stderr)
        return result.stdout

    def template(self, values: dict[str, Any] | None = None, files: tuple[Path, ...] = ()) -> list[dict[str, Any]]:
        """Every object the chart renders (hooks and `helm test` pods included, CRDs not)."""
        out = self.run("template", RELEASE, str(CHART), "--namespace", NAMESPACE, values=values, files=files)
        return [doc for doc in yaml.safe_load_all(out) if doc]

    def template_error(self, values: dict[str, Any], files: tuple[Path, ...] = ()) -> str:
        """The error helm reports for values that must be refused."""
        try:
            self.template(values, files)
        except HelmFailed as failed:
            return failed.stderr
        raise AssertionError(f"helm template accepted values it should refuse: {values}")

    def lint(self, files: tuple[Path, ...] = ()) -> str:
        return self.run("lint", "--strict", str(CHART), files=files)


def render_notes(helm: Helm, workdir: Path, values: dict[str, Any], files: tuple[Path, ...] = ()) -> str:
    """NOTES.txt as `helm install` would print it. `helm template` skips NOTES.txt, so a copy of
    the chart (in `workdir`) renders it through `tpl` in a throwaway template."""
    chart = workdir / "chart"
    shutil.copytree(CHART, chart)
    shutil.copy(chart / "templates" / "NOTES.txt", chart / "NOTES.txt")
    (chart / "templates" / "notes-preview.yaml").write_text('notes: {{ tpl (.Files.Get "NOTES.txt") . | toJson }}\n')
    out = helm.run(
        "template",
        RELEASE,
        str(chart),
        "--namespace",
        NAMESPACE,
        "--show-only",
        "templates/notes-preview.yaml",
        values=values,
        files=files,
    )
    return yaml.safe_load(out)["notes"]


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name)


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The container's env entries by name (value or valueFrom)."""
    return {entry["name"]: entry for entry in container.get("env", [])}


def load_crds() -> dict[tuple[str, str], dict[str, Any]]:
    """The chart's CRDs' openAPIV3Schemas by (apiVersion, kind)."""
    schemas = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schemas[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return schemas


@dataclass(frozen=True)
class DashboardQuery:
    panel: str
    ref_id: str
    expr: str


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_queries() -> list[DashboardQuery]:
    """Every PromQL expression of the dashboard's panels."""
    return [
        DashboardQuery(panel["title"], target["refId"], target["expr"])
        for panel in dashboard()["panels"]
        if panel["type"] != "row"
        for target in panel["targets"]
    ]


# What Grafana sends in place of the dashboard's variables when a namespace, the release's job
# (its Service's name, which for release "tasksync" is "tasksync") and every pod are selected;
# `$__rate_interval` is at least four scrape intervals.
DASHBOARD_VARIABLES = {"namespace": NAMESPACE, "job": RELEASE, "pod": ".*", "__rate_interval": "1m"}

# A Grafana variable: $name or ${name}.
GRAFANA_VARIABLE = re.compile(r"\$\{?(\w+)\}?")


def grafana_to_promql(expr: str, variables: dict[str, str]) -> str:
    """A dashboard expression with Grafana's variables replaced by what Grafana would send."""
    return GRAFANA_VARIABLE.sub(lambda m: variables[m.group(1)], expr)


def alert_expressions(helm: Helm) -> list[str]:
    """The PromQL of every rule in the chart's PrometheusRule."""
    values = {**MINIMAL_VALUES, "monitoring": {"prometheusRule": {"enabled": True}}}
    spec = one(helm.template(values), "PrometheusRule")["spec"]
    return [rule["expr"] for group in spec["groups"] for rule in group["rules"]]
