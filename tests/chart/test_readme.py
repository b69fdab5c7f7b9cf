"""charts/tasksync/README.md lists every value of values.yaml, as scripts/render_chart_readme.py
renders it from the comments there."""

from __future__ import annotations

import importlib.util
import json
import sys
from types import ModuleType
from typing import Any

from tests.chart.charttools import CHART, REPO


def renderer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("render_chart_readme", REPO / "scripts" / "render_chart_readme.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs: its dataclasses look their module up by name.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def schema_paths(node: dict[str, Any], prefix: str = "") -> list[str]:
    paths = []
    for key, child in node.get("properties", {}).items():
        paths += [prefix + key, *schema_paths(child, f"{prefix}{key}.")]
    return paths


def test_the_readme_matches_values_yaml() -> None:
    assert renderer().render_tables() in (CHART / "README.md").read_text(), "run scripts/render_chart_readme.py"


def test_every_value_the_schema_defines_has_a_row() -> None:
    # `global` is Helm's, for subcharts; values.yaml does not set it.
    schema = json.loads((CHART / "values.schema.json").read_text())
    documented = [value.path for value in renderer().read_values()]
    assert sorted(documented) == sorted(p for p in schema_paths(schema) if p != "global")
    assert all(value.comment for value in renderer().read_values())
