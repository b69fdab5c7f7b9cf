"""The exact RBAC the operator needs; docs/operator.md lists the same rules with their reasons.

The chart's ClusterRole (or Role, when the operator watches one namespace) is meant to grant
precisely `RULES`, its Role in its own namespace `leader_election_rules`, and its
ValidatingAdmissionPolicy `configmap_write_policy`; tests compare the chart and the docs against
this module. The operator's test suite runs it under all three on a real API server with RBAC
and the OwnerReferencesPermissionEnforcement admission plugin, so a missing verb fails a test.
"""

from __future__ import annotations

from typing import Any

import msgspec

from tasksync_operator.model import LIMITS_TARGET_LABEL, MANAGED_BY, MANAGED_BY_LABEL
from tasksync_operator.ratelimits import CONFIGMAP_SUFFIX


class Rule(msgspec.Struct, frozen=True, kw_only=True):
    api_group: str
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    reason: str
    cluster_scoped: bool = False
    """Needs a ClusterRole even when the operator watches a single namespace."""

    def as_policy_rule(self) -> dict[str, Any]:
        return {"apiGroups": [self.api_group], "resources": list(self.resources), "verbs": list(self.verbs)}


RULES: tuple[Rule, ...] = (
    Rule(
        api_group="apiextensions.k8s.io",
        resources=("customresourcedefinitions",),
        verbs=("list", "watch"),
        reason="kopf follows CRDs, so that TaskSync's CRDs installed or upgraded after it started "
        "are served without a restart (the Dapr Subscription API the operator finds through "
        "discovery itself)",
        cluster_scoped=True,
    ),
    Rule(
        api_group="",
        resources=("namespaces",),
        verbs=("list", "watch"),
        reason="kopf follows the namespaces that match --namespace (names or globs) as they come "
        "and go; unused with all namespaces",
        cluster_scoped=True,
    ),
    Rule(
        api_group="tasksync.io",
        resources=("tasksyncsubscriptions", "ratelimitpolicies"),
        verbs=("list", "watch", "patch"),
        reason="kopf watches the custom resources and patches their metadata: handler progress "
        "and last-handled annotations, the finalizer on RateLimitPolicies, retry wake-ups",
    ),
    Rule(
        api_group="tasksync.io",
        resources=("tasksyncsubscriptions/status", "ratelimitpolicies/status"),
        verbs=("patch",),
        reason="status reports: conditions, observedGeneration, the Subscription name, the limits "
        "generation in force (also on sibling policies of the same target)",
    ),
    Rule(
        api_group="tasksync.io",
        resources=("tasksyncsubscriptions/finalizers",),
        verbs=("update",),
        reason="the Subscription's ownerReference sets blockOwnerDeletion, which the "
        "OwnerReferencesPermissionEnforcement admission plugin allows only to who may update "
        "the owner's finalizers",
    ),
    Rule(
        api_group="dapr.io",
        resources=("subscriptions",),
        verbs=("get", "list", "watch", "create", "update"),
        reason="read, create and repair the Dapr Subscriptions; the watch triggers drift repair. "
        "No delete: the garbage collector removes them through their ownerReference",
    ),
    Rule(
        api_group="",
        resources=("configmaps",),
        verbs=("get", "list", "watch", "create", "update", "delete"),
        reason="read and write the limits ConfigMaps (update with a resourceVersion precondition); "
        "the watch triggers drift repair. The operator deletes none: the "
        "OwnerReferencesPermissionEnforcement admission plugin lets only who may delete a "
        "ConfigMap add its ownerReference to the Deployment",
    ),
    Rule(
        api_group="apps",
        resources=("deployments",),
        verbs=("get",),
        reason="read the Deployment a limits ConfigMap is for (named after its target), to make it "
        "the ConfigMap's owner: the garbage collector deletes the ConfigMap with the Deployment",
    ),
    Rule(
        api_group="",
        resources=("events",),
        verbs=("create",),
        reason="kopf posts Kubernetes events about the resources it handles",
    ),
)


def policy_rules(*, cluster_scoped: bool | None = None) -> list[dict[str, Any]]:
    """The rules as RBAC PolicyRules; `cluster_scoped` selects one kind (None: all)."""
    return [
        rule.as_policy_rule()
        for rule in RULES
        if cluster_scoped is None or rule.cluster_scoped == cluster_scoped
    ]


def leader_election_rules(lease_name: str) -> list[dict[str, Any]]:
    """The Role, in the operator's own namespace, for leader election over the Lease `lease_name`.

    get and update only that Lease; create cannot be limited to a name (the name is in the body
    RBAC does not see), so it covers any Lease of the namespace.
    """
    return [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get", "update"],
            "resourceNames": [lease_name],
        },
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    ]


def _labelled(obj: str, key: str, value: str) -> str:
    """CEL: `obj` carries the label key=value."""
    labels = f"{obj}.metadata.labels"
    return f"has({labels}) && '{key}' in {labels} && {labels}['{key}'] == '{value}'"


def configmap_write_policy(username: str) -> dict[str, Any]:
    """The spec of the ValidatingAdmissionPolicy that narrows the ConfigMap writes of `username`
    (the operator's service account, system:serviceaccount:<namespace>:<name>).

    RBAC grants create and update on every ConfigMap of the watched namespaces (all of them,
    for a ClusterRole): the names of the limits ConfigMaps follow from RateLimitPolicies created
    later, so no `resourceNames` can list them. The policy holds that user to what the operator
    writes: ConfigMaps labelled as its own, named after their target, and never one it did not
    create, and never one it did not create: taking one over or deleting it (RBAC must grant
    delete for the ownerReference, see RULES; the operator itself deletes nothing). An
    ownerReference may name only the target's Deployment.
    """
    has_target = f"has(object.metadata.labels) && '{LIMITS_TARGET_LABEL}' in object.metadata.labels"
    # DELETE has no `object`, only the `oldObject` being deleted.
    writing = "request.operation == 'DELETE' || "
    return {
        "failurePolicy": "Fail",
        "matchConstraints": {
            "resourceRules": [
                {
                    "apiGroups": [""],
                    "apiVersions": ["v1"],
                    "operations": ["CREATE", "UPDATE", "DELETE"],
                    "resources": ["configmaps"],
                }
            ]
        },
        "matchConditions": [
            {"name": "tasksync-operator", "expression": f"request.userInfo.username == '{username}'"}
        ],
        "validations": [
            {
                "expression": f"{writing}({_labelled('object', MANAGED_BY_LABEL, MANAGED_BY)})",
                "message": "the TaskSync operator writes only ConfigMaps labelled "
                f"{MANAGED_BY_LABEL}={MANAGED_BY}",
            },
            {
                "expression": f"{writing}({has_target} && object.metadata.name == "
                f"object.metadata.labels['{LIMITS_TARGET_LABEL}'] + '{CONFIGMAP_SUFFIX}')",
                "message": "the TaskSync operator writes only limits ConfigMaps: "
                f"<target>{CONFIGMAP_SUFFIX}, labelled {LIMITS_TARGET_LABEL}=<target>",
            },
            {
                "expression": f"{writing}!has(object.metadata.ownerReferences) || ({has_target} && "
                "object.metadata.ownerReferences.all(r, r.apiVersion == 'apps/v1' && "
                f"r.kind == 'Deployment' && r.name == object.metadata.labels['{LIMITS_TARGET_LABEL}']))",
                "message": "the TaskSync operator gives a limits ConfigMap no owner but its "
                "target's Deployment",
            },
            {
                "expression": "request.operation == 'CREATE' || "
                f"({_labelled('oldObject', MANAGED_BY_LABEL, MANAGED_BY)})",
                "message": "the TaskSync operator never takes over or deletes a ConfigMap it did "
                "not create",
            },
        ],
    }
