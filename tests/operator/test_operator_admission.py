"""What the operator's user may write among ConfigMaps, on the real API server.

RBAC lets it create and update every ConfigMap of the namespaces it watches (every namespace of
the cluster in all-namespaces mode): the limits ConfigMaps are named after targets that
RateLimitPolicies name later, so no `resourceNames` can list them. The ValidatingAdmissionPolicy
of tasksync_operator.rbac.configmap_write_policy, which the session installs for the operator's
user as the chart does for its service account, narrows that to the limits ConfigMaps.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from tasksync_operator.model import LIMITS_TARGET_LABEL, MANAGED_BY, MANAGED_BY_LABEL
from tests.operator.operator_testkit import eventually

OURS = {MANAGED_BY_LABEL: MANAGED_BY}


def configmap(name: str, labels: dict[str, str] | None = None, data: str = "x") -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels or {}}, "data": {"limits.yaml": data}}


def refusal(exc: ApiException) -> str:
    assert exc.status in (403, 422), exc
    return json.loads(exc.body)["message"]


@pytest.fixture
async def confined(kube: client.ApiClient, operator_kube: client.ApiClient) -> str:
    """A fresh namespace, once the policy is enforced (the API server loads it asynchronously)."""
    namespace = f"admission-{secrets.token_hex(4)}"
    await client.CoreV1Api(kube).create_namespace({"metadata": {"name": namespace}})

    async def enforced() -> None:
        try:
            await client.CoreV1Api(operator_kube).create_namespaced_config_map(
                namespace, configmap("probe"), dry_run="All"
            )
        except ApiException as exc:
            if "writes only ConfigMaps labelled" not in refusal(exc):
                raise AssertionError(f"refused for another reason: {refusal(exc)}") from exc
            return
        raise AssertionError("the policy is not enforced yet")

    await eventually(enforced, timeout=60, interval=0.5)
    return namespace


async def test_the_operator_writes_its_limits_configmaps(operator_kube, confined):
    core = client.CoreV1Api(operator_kube)
    created = await core.create_namespaced_config_map(
        confined, configmap("orders-limits", {**OURS, LIMITS_TARGET_LABEL: "orders"})
    )
    created.data = {"limits.yaml": "y"}
    replaced = await core.replace_namespaced_config_map("orders-limits", confined, created)
    assert replaced.data == {"limits.yaml": "y"}


@pytest.mark.parametrize(
    ("name", "labels", "expected"),
    [
        ("orders-limits", {LIMITS_TARGET_LABEL: "orders"}, "writes only ConfigMaps labelled"),
        ("app-settings", OURS, "writes only limits ConfigMaps"),
        ("app-settings", {**OURS, LIMITS_TARGET_LABEL: "orders"}, "writes only limits ConfigMaps"),
    ],
    ids=["not-labelled-as-ours", "no-target", "not-named-after-its-target"],
)
async def test_the_operator_cannot_create_other_configmaps(operator_kube, confined, name, labels, expected):
    with pytest.raises(ApiException) as refused:
        await client.CoreV1Api(operator_kube).create_namespaced_config_map(confined, configmap(name, labels))
    assert expected in refusal(refused.value)


async def test_the_operator_cannot_take_over_a_configmap_it_did_not_create(kube, operator_kube, confined):
    # Someone's own ConfigMap that happens to have a limits ConfigMap's name.
    await client.CoreV1Api(kube).create_namespaced_config_map(confined, configmap("orders-limits", data="theirs"))
    theirs = await client.CoreV1Api(operator_kube).read_namespaced_config_map("orders-limits", confined)
    theirs.metadata.labels = {**OURS, LIMITS_TARGET_LABEL: "orders"}
    theirs.data = {"limits.yaml": "ours"}
    with pytest.raises(ApiException) as refused:
        await client.CoreV1Api(operator_kube).replace_namespaced_config_map("orders-limits", confined, theirs)
    assert "never takes over or deletes a ConfigMap it did not create" in refusal(refused.value)
    untouched = await client.CoreV1Api(kube).read_namespaced_config_map("orders-limits", confined)
    assert untouched.data == {"limits.yaml": "theirs"}


async def test_the_operator_cannot_strip_its_label(operator_kube, confined):
    core = client.CoreV1Api(operator_kube)
    created = await core.create_namespaced_config_map(
        confined, configmap("orders-limits", {**OURS, LIMITS_TARGET_LABEL: "orders"})
    )
    created.metadata.labels = {LIMITS_TARGET_LABEL: "orders"}
    with pytest.raises(ApiException) as refused:
        await core.replace_namespaced_config_map("orders-limits", confined, created)
    assert "writes only ConfigMaps labelled" in refusal(refused.value)


async def test_the_policy_binds_the_operator_only(kube, confined):
    await client.CoreV1Api(kube).create_namespaced_config_map(confined, configmap("app-settings"))


def owner(name: str) -> dict[str, Any]:
    uid = "0c5b5f43-7f3e-4d3c-9d2b-1a2b3c4d5e6f"
    return {"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": uid}


async def test_the_operator_hands_its_configmap_to_its_targets_deployment(operator_kube, confined):
    core = client.CoreV1Api(operator_kube)
    created = await core.create_namespaced_config_map(
        confined, configmap("orders-limits", {**OURS, LIMITS_TARGET_LABEL: "orders"})
    )
    # An update adding the ownerReference: the admission plugin wants delete rights for it.
    body = operator_kube.sanitize_for_serialization(created)
    body["metadata"]["ownerReferences"] = [owner("orders")]
    replaced = await core.replace_namespaced_config_map("orders-limits", confined, body)
    assert [reference.name for reference in replaced.metadata.owner_references] == ["orders"]


async def test_the_operator_gives_no_other_owner(operator_kube, confined):
    body = configmap("orders-limits", {**OURS, LIMITS_TARGET_LABEL: "orders"})
    body["metadata"]["ownerReferences"] = [owner("payments")]
    with pytest.raises(ApiException) as refused:
        await client.CoreV1Api(operator_kube).create_namespaced_config_map(confined, body)
    assert "no owner but its target's Deployment" in refusal(refused.value)


async def test_the_operator_deletes_no_configmap_it_did_not_create(kube, operator_kube, confined):
    await client.CoreV1Api(kube).create_namespaced_config_map(confined, configmap("app-settings", data="theirs"))
    with pytest.raises(ApiException) as refused:
        await client.CoreV1Api(operator_kube).delete_namespaced_config_map("app-settings", confined)
    assert "never takes over or deletes a ConfigMap it did not create" in refusal(refused.value)
