"""The operator's RBAC in the chart is exactly tasksync_operator.rbac: the rules, the leader
election Role and the ConfigMap admission policy that the operator's own tests prove sufficient
(and the policy confining) against a real API server, and nothing more."""

from __future__ import annotations

from typing import Any

import pytest

from tasksync_operator import rbac
from tasksync_operator.main import election_settings, parse_args
from tests.chart.charttools import MINIMAL_VALUES, NAMESPACE, Helm, container, find, one

OPERATOR = "tasksync-operator"
OPERATOR_USERNAME = f"system:serviceaccount:{NAMESPACE}:{OPERATOR}"
LEADER_ELECTION_ROLE = f"{OPERATOR}-leader-election"

MODES = {
    "own-namespace": {},
    "named-namespaces": {"watchNamespaces": ["team-a", "team-b"]},
    "glob": {"watchNamespaces": ["tasksync", "team-*"]},
    "all-namespaces": {"watchAllNamespaces": True},
}


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


def bound_roles(objs: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """The rules of every Role bound to the operator, by (namespace, name)."""
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in find(objs, "Role")}
    rules = {}
    for binding in find(objs, "RoleBinding"):
        namespace = binding["metadata"]["namespace"]
        assert bound_to_operator(binding)
        assert binding["roleRef"]["kind"] == "Role"
        key = (namespace, binding["roleRef"]["name"])
        rules[key] = roles.pop(key)["rules"]
    assert not roles, f"Roles bound to nobody: {list(roles)}"
    return rules


def namespaced_rules(objs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The rules of the Role bound to the operator in each watched namespace."""
    return {
        namespace: rules
        for (namespace, name), rules in bound_roles(objs).items()
        if name != LEADER_ELECTION_ROLE
    }


def operator_command(objs: list[dict[str, Any]]) -> list[str]:
    return container(one(objs, "Deployment", OPERATOR), "operator")["command"]


def operator_namespaces(objs: list[dict[str, Any]]) -> list[str]:
    return [arg.removeprefix("--namespace=") for arg in operator_command(objs) if arg.startswith("--namespace=")]


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


def configmap_writes(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        rule
        for rule in rules
        if "" in rule["apiGroups"]
        and "configmaps" in rule["resources"]
        and {"create", "update", "patch", "*"} & set(rule["verbs"])
    ]


@pytest.mark.parametrize("mode", MODES.values(), ids=MODES.keys())
def test_configmap_writes_are_confined_to_the_limits_configmaps(helm: Helm, mode: dict[str, Any]) -> None:
    """RBAC grants create/update on every ConfigMap where the operator works (every namespace
    with a ClusterRole): no resourceNames can list ConfigMaps named after RateLimitPolicies yet
    to come. The one identity holding that grant is confined by the admission policy that
    tests/operator/test_operator_admission.py proves against a real API server."""
    objs = render(helm, mode)
    writers = [role for role in find(objs, "ClusterRole") + find(objs, "Role") if configmap_writes(role["rules"])]
    assert writers, "the operator writes the limits ConfigMaps"
    bindings = find(objs, "ClusterRoleBinding") + find(objs, "RoleBinding")
    for role in writers:
        (binding,) = [
            b
            for b in bindings
            if (b["roleRef"]["kind"], b["roleRef"]["name"], b["metadata"].get("namespace"))
            == (role["kind"], role["metadata"]["name"], role["metadata"].get("namespace"))
        ]
        assert bound_to_operator(binding)

    policy = one(objs, "ValidatingAdmissionPolicy")
    assert policy["spec"] == rbac.configmap_write_policy(OPERATOR_USERNAME)
    binding = one(objs, "ValidatingAdmissionPolicyBinding")
    # No matchResources: it applies in every namespace, as far as the ClusterRole reaches.
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}


def test_the_policy_names_the_operators_service_account(helm: Helm) -> None:
    objs = render(helm, {"serviceAccount": {"name": "limits-writer"}})
    policy = one(objs, "ValidatingAdmissionPolicy")
    assert policy["spec"] == rbac.configmap_write_policy(f"system:serviceaccount:{NAMESPACE}:limits-writer")


@pytest.mark.parametrize("mode", MODES.values(), ids=MODES.keys())
def test_leader_election_may_use_only_its_lease(helm: Helm, mode: dict[str, Any]) -> None:
    objs = render(helm, mode)
    election = election_settings(parse_args(operator_command(objs)[1:]))
    assert election is not None
    assert election.lease_namespace == NAMESPACE
    assert bound_roles(objs)[(NAMESPACE, LEADER_ELECTION_ROLE)] == rbac.leader_election_rules(election.lease_name)


def test_two_replicas_elect_a_leader(helm: Helm) -> None:
    objs = render(helm, {})
    deployment = one(objs, "Deployment", OPERATOR)
    assert deployment["spec"]["replicas"] == 2
    # Rolled, not recreated: a standby stays up, and the old leader releases the Lease.
    assert deployment["spec"]["strategy"] == {"type": "RollingUpdate"}
    election = election_settings(parse_args(operator_command(objs)[1:]))
    assert election is not None
    assert (election.lease_duration, election.renew_deadline, election.retry_period) == (15, 10, 2)
    spread = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    (term,) = spread["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]


def test_leader_election_timings_must_leave_the_leader_time_to_step_down(helm: Helm) -> None:
    with pytest.raises(AssertionError, match="leaseDurationSeconds > renewDeadlineSeconds"):
        render(
            helm,
            {"leaderElection": {"leaseDurationSeconds": 10, "renewDeadlineSeconds": 10, "retryPeriodSeconds": 2}},
        )


@pytest.mark.parametrize("operator", [{}, {"watchAllNamespaces": True}], ids=["own-namespace", "all"])
def test_the_operator_runs_as_its_service_account_with_its_liveness_endpoint(
    helm: Helm, operator: dict[str, Any]
) -> None:
    objs = render(helm, operator)
    deployment = one(objs, "Deployment", OPERATOR)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == one(objs, "ServiceAccount", OPERATOR)["metadata"]["name"]
    operator_container = container(deployment, "operator")
    assert operator_container["command"][0] == "tasksync-operator"
    assert "--liveness=http://0.0.0.0:8080/healthz" in operator_container["command"]
    assert operator_container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert operator_container["ports"] == [{"name": "healthz", "containerPort": 8080, "protocol": "TCP"}]


def test_the_operator_flags_are_ones_it_accepts(helm: Helm) -> None:
    objs = render(
        helm,
        {
            "watchNamespaces": ["team-a", "team-*"],
            "logFormat": "plain",
            "resyncIntervalSeconds": 60,
            "daprPollIntervalSeconds": 2,
        },
    )
    options = parse_args(operator_command(objs)[1:])
    assert options.namespaces == ["team-a", "team-*"]
    assert options.liveness == "http://0.0.0.0:8080/healthz"
    assert options.log_format == "plain"
    assert (options.resync_interval, options.dapr_poll_interval) == (60, 2)


def test_the_service_pods_get_no_api_access(helm: Helm) -> None:
    objs = render(helm, {})
    service_account = one(objs, "ServiceAccount", "tasksync")
    assert service_account["automountServiceAccountToken"] is False
    subjects = [s for b in find(objs, "RoleBinding") + find(objs, "ClusterRoleBinding") for s in b["subjects"]]
    assert all(s["name"] == OPERATOR for s in subjects)


def test_no_operator_means_no_rbac(helm: Helm) -> None:
    objs = render(helm, {"enabled": False})
    for kind in (
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ):
        assert find(objs, kind) == []
    assert find(objs, "Deployment", OPERATOR) == []
