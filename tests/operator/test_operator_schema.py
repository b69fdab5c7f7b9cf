"""Static checks that keep the CRDs, the service's limits schema, the RBAC constant and the docs
in agreement. No API server involved."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
import yaml

from tasksync.limits import Limits
from tasksync_operator import rbac
from tasksync_operator.model import PolicyLimits
from tests.operator.operator_testkit import CRD_DIR, REPO, load_yaml

CRDS = sorted(CRD_DIR.glob("*.yaml"))


def schema_of(path: Any) -> dict[str, Any]:
    (version,) = load_yaml(path)["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]


def fields(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every field of a structural schema, with its dotted path."""
    for name, child in (schema.get("properties") or {}).items():
        yield f"{path}.{name}", child
        yield from fields(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield f"{path}[]", schema["items"]
        yield from fields(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield f"{path}{{}}", schema["additionalProperties"]
        yield from fields(schema["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize("path", CRDS, ids=lambda p: p.name)
def test_every_field_has_a_description(path):
    schema = schema_of(path)
    assert schema.get("description")
    undocumented = [name for name, field in fields(schema) if not field.get("description")]
    assert undocumented == []


@pytest.mark.parametrize("path", CRDS, ids=lambda p: p.name)
def test_status_subresource_and_printer_columns(path):
    (version,) = load_yaml(path)["spec"]["versions"]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert columns[0] == "Ready" and columns[-1] == "Age"


def test_scopes_are_required_not_defaulted():
    """The app id is the TaskSync release's: a default could only be right for one release name
    and would silently deliver everyone else's events to nobody."""
    spec = schema_of(CRD_DIR / "tasksync.io_tasksyncsubscriptions.yaml")["properties"]["spec"]
    assert "default" not in spec["properties"]["scopes"]
    messages = {rule["rule"]: rule["message"] for rule in spec["x-kubernetes-validations"]}
    assert "scopes is required" in messages["has(self.scopes)"]
    assert "Helm release's full name" in messages["has(self.scopes)"]


def camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(word.capitalize() for word in rest)


def test_policy_limits_match_the_service_limits_schema():
    """The CRD's limits are exactly the service's, with the same bounds."""
    limits_schema = schema_of(CRD_DIR / "tasksync.io_ratelimitpolicies.yaml")["properties"]["spec"][
        "properties"
    ]["limits"]
    properties = limits_schema["properties"]
    service = {field.name: field.type for field in msgspec.inspect.type_info(Limits).fields}
    assert set(properties) == {camel(name) for name in service}
    assert {f.encode_name for f in msgspec.inspect.type_info(PolicyLimits).fields} == set(properties)
    for name, kind in service.items():
        prop = properties[camel(name)]
        if isinstance(kind, msgspec.inspect.IntType):
            assert (prop["type"], prop["minimum"]) == ("integer", kind.ge), name
        else:
            assert isinstance(kind, msgspec.inspect.FloatType)
            assert (prop["type"], prop["minimum"], prop["exclusiveMinimum"]) == ("number", kind.gt, True), (
                name
            )
        # No CRD defaults here: an unset limit must stay unset to be inherited in the merge.
        assert "default" not in prop


def docs_yaml() -> list[dict[str, Any]]:
    docs = (REPO / "docs" / "operator.md").read_text()
    blocks = [doc for block in re.findall(r"```yaml\n(.*?)```", docs, re.S) for doc in yaml.safe_load_all(block)]
    return [block for block in blocks if isinstance(block, dict)]


def test_rbac_rules_in_the_docs_are_the_operator_rules():
    docs = (REPO / "docs" / "operator.md").read_text()
    (documented,) = [block["rules"] for block in docs_yaml() if set(block) == {"rules"}]
    assert documented == rbac.policy_rules()
    # And the table lists every rule with its reason.
    for rule in rbac.RULES:
        assert rule.reason in docs.replace("`", "")


# The chart's objects for the release "tasksync" in the namespace "tasksync", as the docs show them.
CHART_OPERATOR = "tasksync-operator"
CHART_SERVICE_ACCOUNT = "system:serviceaccount:tasksync:tasksync-operator"


def test_leader_election_role_in_the_docs_is_the_operators():
    (role,) = [block for block in docs_yaml() if block.get("kind") == "Role"]
    assert role["rules"] == rbac.leader_election_rules(CHART_OPERATOR)


def test_configmap_policy_in_the_docs_is_the_operators():
    (policy,) = [block for block in docs_yaml() if block.get("kind") == "ValidatingAdmissionPolicy"]
    assert policy["spec"] == rbac.configmap_write_policy(CHART_SERVICE_ACCOUNT)
