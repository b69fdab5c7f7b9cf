"""Validate rendered objects: Kubernetes' own kinds with kubernetes-validate, the chart's custom
resources against its CRDs, and the third-party kinds (Dapr, prometheus-operator) whose CRDs
are not here against schemas of the fields the chart uses.

The third-party schemas below follow the projects' API references (Dapr's Component spec,
prometheus-operator's ServiceMonitor and PrometheusRule) and forbid any field they do not list,
so a misspelt field in a template fails instead of being dropped by the API server. The
PromQL inside a PrometheusRule is checked by promtool (tests/chart/test_alerts.py).
"""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import kubernetes_validate

from tests.chart.charttools import load_crds

# The chart's Chart.yaml kubeVersion floor, and the newest release kubernetes-validate knows,
# so fields removed or added in between are caught both ways.
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.latest_version())


def _strict(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


_STRING = {"type": "string"}
_STRING_MAP = {"type": "object", "additionalProperties": _STRING}
_STRINGS = {"type": "array", "items": _STRING}
_LABEL_SELECTOR = _strict(
    {"matchLabels": _STRING_MAP, "matchExpressions": {"type": "array", "items": {"type": "object"}}}
)
# prometheus-operator's Duration.
_DURATION = {
    "type": "string",
    "pattern": "^(0|([0-9]+y)?([0-9]+w)?([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?)$",
}


def _resource(spec: dict[str, Any], **top_level: dict[str, Any]) -> dict[str, Any]:
    """A whole object: apiVersion, kind and metadata (checked as ObjectMeta elsewhere), spec."""
    return _strict(
        {"apiVersion": _STRING, "kind": _STRING, "metadata": {"type": "object"}, "spec": spec, **top_level},
        ("spec",),
    )


_DAPR_COMPONENT_SPEC = _strict(
    {
        "type": _STRING,
        "version": _STRING,
        "ignoreErrors": {"type": "boolean"},
        "initTimeout": _STRING,
        "metadata": {
            "type": "array",
            "items": _strict(
                {
                    "name": _STRING,
                    "value": {},
                    "secretKeyRef": _strict({"name": _STRING, "key": _STRING}, ("name",)),
                },
                ("name",),
            ),
        },
    },
    ("type", "version"),
)

_SERVICE_MONITOR_ENDPOINT = _strict(
    {
        "port": _STRING,
        "path": _STRING,
        "scheme": {"enum": ["http", "https"]},
        "interval": _DURATION,
        "scrapeTimeout": _DURATION,
        "honorLabels": {"type": "boolean"},
    }
)
_SERVICE_MONITOR_SPEC = _strict(
    {
        "jobLabel": _STRING,
        "selector": _LABEL_SELECTOR,
        "namespaceSelector": _strict({"any": {"type": "boolean"}, "matchNames": _STRINGS}),
        "endpoints": {"type": "array", "minItems": 1, "items": _SERVICE_MONITOR_ENDPOINT},
    },
    ("selector", "endpoints"),
)

_PROMETHEUS_RULE = {
    **_strict(
        {
            "alert": _STRING,
            "record": _STRING,
            "expr": _STRING,
            "for": _DURATION,
            "labels": _STRING_MAP,
            "annotations": _STRING_MAP,
        },
        ("expr",),
    ),
    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
}
_PROMETHEUS_RULE_SPEC = _strict(
    {
        "groups": {
            "type": "array",
            "items": _strict(
                {"name": _STRING, "interval": _DURATION, "rules": {"type": "array", "items": _PROMETHEUS_RULE}},
                ("name", "rules"),
            ),
        }
    },
    ("groups",),
)

THIRD_PARTY_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("dapr.io/v1alpha1", "Component"): _resource(
        _DAPR_COMPONENT_SPEC, scopes=_STRINGS, auth=_strict({"secretStore": _STRING})
    ),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): _resource(_SERVICE_MONITOR_SPEC),
    ("monitoring.coreos.com/v1", "PrometheusRule"): _resource(_PROMETHEUS_RULE_SPEC),
}


def _closed(schema: dict[str, Any]) -> dict[str, Any]:
    """A CRD schema that refuses unknown fields. The API server prunes them silently, which
    would hide a misspelt field in a template; kubectl's strict field validation refuses them."""
    schema = copy.deepcopy(schema)

    def close(node: dict[str, Any]) -> None:
        if "properties" in node and "additionalProperties" not in node and not node.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            node["additionalProperties"] = False
        for child in node.get("properties", {}).values():
            close(child)
        if isinstance(node.get("items"), dict):
            close(node["items"])
        if isinstance(node.get("additionalProperties"), dict):
            close(node["additionalProperties"])

    close(schema)
    # apiVersion, kind and metadata are the API server's, checked separately.
    schema["properties"]["metadata"] = {"type": "object"}
    return schema


CRD_SCHEMAS = {key: _closed(schema) for key, schema in load_crds().items()}


def _validate_metadata(obj: dict[str, Any], version: str) -> None:
    # kubernetes-validate only knows built-in kinds, but ObjectMeta is the same everywhere: check
    # a custom resource's metadata as that of a ConfigMap.
    kubernetes_validate.validate(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj["metadata"]}, version, strict=True
    )


def validate(obj: dict[str, Any]) -> str:
    """Validate one rendered object; returns what it was checked against, raises if invalid."""
    key = (obj["apiVersion"], obj["kind"])
    if key in CRD_SCHEMAS:
        for version in KUBERNETES_VERSIONS:
            _validate_metadata(obj, version)
        # CRD schemas are OpenAPI 3.0: `exclusiveMinimum: true` is draft 4's boolean form.
        jsonschema.Draft4Validator(CRD_SCHEMAS[key]).validate(obj)
        return "chart CRD"
    if key in THIRD_PARTY_SCHEMAS:
        for version in KUBERNETES_VERSIONS:
            _validate_metadata(obj, version)
        jsonschema.Draft7Validator(THIRD_PARTY_SCHEMAS[key]).validate(obj)
        return "third-party spec"
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(obj, version, strict=True)
    return "kubernetes schema"
