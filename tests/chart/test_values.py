"""values.yaml documents every value; values.schema.json refuses what would otherwise be
silently ignored or misread."""

from __future__ import annotations

import json
import re

import pytest

from tests.chart.charttools import CHART, MINIMAL_VALUES, Helm


def with_minimal(values: dict) -> dict:
    return {**MINIMAL_VALUES, **values}


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"replicaCont": 2}, "replicaCont"),
        ({"ingress": {"enable": True}}, "enable"),
        ({"dapr": {"subscription": {"mode": "declarative", "dealLetterTopic": "dead"}}}, "dealLetterTopic"),
        ({"monitoring": {"prometheusRule": {"alerts": {"errorRate": {"threshold": 0.1}}}}}, "errorRate"),
    ],
    ids=["top-level", "nested", "deep", "alert-name"],
)
def test_a_misspelt_key_is_refused(helm: Helm, values: dict, key: str) -> None:
    error = helm.template_error(with_minimal(values))
    assert "values don't meet the specifications of the schema" in error
    assert key in error


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"replicaCount": "three"}, "replicaCount"),
        ({"dapr": {"enabled": "yes"}}, "enabled"),
        ({"allowedOrigins": "https://app.example.com"}, "allowedOrigins"),
        ({"drain": {"graceSeconds": "25s"}}, "graceSeconds"),
    ],
    ids=["integer", "boolean", "list", "number"],
)
def test_a_wrong_type_is_refused(helm: Helm, values: dict, key: str) -> None:
    error = helm.template_error(with_minimal(values))
    assert "values don't meet the specifications of the schema" in error
    assert key in error


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"auth": {"plugin": "dev"}}, "plugin"),
        ({"broker": {"url": "redis-master:6379"}}, "url"),
        ({"dapr": {"subscription": {"mode": "both"}}}, "mode"),
        ({"monitoring": {"prometheusRule": {"alerts": {"errorRatio": {"threshold": 5}}}}}, "threshold"),
        ({"monitoring": {"serviceMonitor": {"interval": "30 seconds"}}}, "interval"),
    ],
    ids=["dev-auth", "broker-url", "subscription-mode", "ratio-above-one", "duration"],
)
def test_a_value_out_of_range_is_refused(helm: Helm, values: dict, key: str) -> None:
    error = helm.template_error(with_minimal(values))
    assert key in error


def test_every_value_in_values_yaml_has_a_comment() -> None:
    # Keys inside free-form objects (resources, security contexts, annotation maps: the schema
    # gives them no properties) are Kubernetes' own fields, explained by the comment on the
    # object itself.
    schema = json.loads((CHART / "values.schema.json").read_text())
    lines = (CHART / "values.yaml").read_text().splitlines()
    key_line = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z][\w.-]*):")
    stack: list[tuple[int, dict]] = [(-1, schema)]
    uncommented = []
    for number, line in enumerate(lines):
        match = key_line.match(line)
        if not match:
            continue
        indent = len(match["indent"])
        while stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1]
        if "properties" not in parent:
            continue
        previous = next(earlier for earlier in reversed(lines[:number]) if earlier.strip())
        if not previous.strip().startswith("#"):
            uncommented.append(f"line {number + 1}: {match['key']}")
        stack.append((indent, parent["properties"].get(match["key"], {})))
    assert uncommented == []
