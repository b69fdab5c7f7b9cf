"""The exact RBAC the operator needs; docs/operator.md lists the same rules with their reasons.

The chart's ClusterRole (or Role, when the operator watches one namespace) is meant to grant
precisely `RULES`, and tests compare the chart and the docs against this module. The operator's
test suite runs it under these rules on a real API server with RBAC and the
OwnerReferencesPermissionEnforcement admission plugin, so a missing verb fails a test.
"""

from __future__ import annotations

from typing import Any

import msgspec


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
        reason="kopf notices CRDs installed after it started (Dapr's Subscription CRD) and starts "
        "watching them without a restart",
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
        verbs=("get", "list", "watch", "create", "update"),
        reason="read and write the limits ConfigMaps (update with a resourceVersion precondition); "
        "the watch triggers drift repair",
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
