"""The operator's RBAC in the chart is exactly tasksync_operator.rbac.RULES: the rules the
operator's own tests prove sufficient against a real API server, and nothing more."""

from __future__ import annotations

from typing import Any

import pytest
from tasksync_operator import rbac
from tasksync_operator.main import parse_args

from tests.chart.charttools import MINIMAL_VALUES, NAMESPACE, Helm, container, find, one

OPERATOR = "tasksync-operator"


def render(helm: Helm, operator: dict[str, Any]) -> list[dict[str, Any]]:
    return helm.template({**MINIMAL_VALUES, "operator": operator})


def bound_to_operator(binding: dict[str, Any]) -> bool:
    return binding["subjects"] == [{"kind": "ServiceAccount", "name": OPERATOR, "namespace": NAMESPACE}]


def cluster_rules(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    (role,) = find(objs, "ClusterRole")
    (binding,) = find(objs, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert bound_to_operator(binding)
    return role["rules"]


def namespaced_rules(objs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The rules of the Role bound to the operator in each namespace."""
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in find(objs, "Role")}
    rules = {}
    for binding in find(objs, "RoleBinding"):
        namespace = binding["metadata"]["namespace"]
        assert bound_to_operator(binding)
        assert binding["roleRef"]["kind"] == "Role"
        rules[namespace] = roles.pop((namespace, binding["roleRef"]["name"]))["rules"]
    assert not roles, f"Roles bound to nobody: {list(roles)}"
    return rules


def operator_namespaces(objs: list[dict[str, Any]]) -> list[str]:
    command = container(one(objs, "Deployment", OPERATOR), "operator")["command"]
    return [arg.removeprefix("--namespace=") for arg in command if arg.startswith("--namespace=")]


def test_watching_all_namespaces_is_one_cluster_role_with_every_rule(helm: Helm) -> None:
    objs = render(helm, {"watchAllNamespaces": True})
    assert cluster_rules(objs) == rbac.policy_rules()
    assert namespaced_rules(objs) == {}
    assert operator_namespaces(objs) == []


def test_by_default_the_operator_watches_its_own_namespace_only(helm: Helm) -> None:
    objs = render(helm, {})
    assert cluster_rules(objs) == rbac.policy_rules(cluster_scoped=True)
    assert namespaced_rules(objs) == {NAMESPACE: rbac.policy_rules(cluster_scoped=False)}
    assert operator_namespaces(objs) == [NAMESPACE]


def test_named_namespaces_get_a_role_each_and_only_the_cluster_scoped_rules_cluster_wide(helm: Helm) -> None:
    objs = render(helm, {"watchNamespaces": ["team-a", "team-b"]})
    assert cluster_rules(objs) == rbac.policy_rules(cluster_scoped=True)
    assert namespaced_rules(objs) == {
        "team-a": rbac.policy_rules(cluster_scoped=False),
        "team-b": rbac.policy_rules(cluster_scoped=False),
    }
    assert operator_namespaces(objs) == ["team-a", "team-b"]


def test_a_glob_needs_the_rules_cluster_wide(helm: Helm) -> None:
    # A Role cannot be created ahead of a namespace that matches the glob later.
    objs = render(helm, {"watchNamespaces": ["tasksync", "team-*"]})
    assert cluster_rules(objs) == rbac.policy_rules()
    assert namespaced_rules(objs) == {}
    assert operator_namespaces(objs) == ["tasksync", "team-*"]


@pytest.mark.parametrize("operator", [{}, {"watchAllNamespaces": True}], ids=["own-namespace", "all"])
def test_the_operator_runs_as_its_service_account_with_its_liveness_endpoint(
    helm: Helm, operator: dict[str, Any]
) -> None:
    objs = render(helm, operator)
    deployment = one(objs, "Deployment", OPERATOR)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == one(objs, "ServiceAccount", OPERATOR)["metadata"]["name"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    operator_container = container(deployment, "operator")
    assert operator_container["command"][0] == "tasksync-operator"
    assert "--liveness=http://0.0.0.0:8080/healthz" in operator_container["command"]
    assert operator_container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert operator_container["ports"] == [{"name": "healthz", "containerPort": 8080, "protocol": "TCP"}]


def test_the_operator_flags_are_ones_it_accepts(helm: Helm) -> None:
    objs = render(helm, {"watchNamespaces": ["team-a", "team-*"], "logFormat": "plain"})
    options = parse_args(container(one(objs, "Deployment", OPERATOR), "operator")["command"][1:])
    assert options.namespaces == ["team-a", "team-*"]
    assert options.liveness == "http://0.0.0.0:8080/healthz"
    assert options.log_format == "plain"


def test_the_service_pods_get_no_api_access(helm: Helm) -> None:
    objs = render(helm, {})
    service_account = one(objs, "ServiceAccount", "tasksync")
    assert service_account["automountServiceAccountToken"] is False
    subjects = [s for b in find(objs, "RoleBinding") + find(objs, "ClusterRoleBinding") for s in b["subjects"]]
    assert all(s["name"] == OPERATOR for s in subjects)


def test_no_operator_means_no_rbac(helm: Helm) -> None:
    objs = render(helm, {"enabled": False})
    for kind in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
        assert find(objs, kind) == []
    assert find(objs, "Deployment", OPERATOR) == []
