"""RateLimitPolicy -> limits ConfigMap, against a real API server with the operator running.

The ConfigMap's file is read back with the service's own loader (tasksync.limits), so these
tests cover the whole path from a policy to the limits the service would enforce.
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from tasksync.limits import Limits, LimitsFile, decode_limits_file
from tasksync_operator.model import GROUP, RLP_PLURAL, VERSION
from tests.operator.operator_testkit import eventually

pytestmark = pytest.mark.usefixtures("operator")

MERGE_PATCH = "application/merge-patch+json"
HAND_WRITTEN = "apiVersion: tasksync.io/limits/v1\ngeneration: 99\nlimits: {max_frame_bytes: 1}\n"


def policy(
    name: str, limits: dict[str, Any], *, target: str = "tasksync", priority: int | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {"target": target, "limits": limits}
    if priority is not None:
        spec["priority"] = priority
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "RateLimitPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }


async def create_policy(kube: client.ApiClient, namespace: str, body: dict[str, Any]) -> None:
    await client.CustomObjectsApi(kube).create_namespaced_custom_object(
        GROUP, VERSION, namespace, RLP_PLURAL, body
    )


async def patch_policy(kube: client.ApiClient, namespace: str, name: str, patch: dict[str, Any]) -> None:
    await client.CustomObjectsApi(kube).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, RLP_PLURAL, name, patch, _content_type=MERGE_PATCH
    )


async def read_policy(kube: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return await client.CustomObjectsApi(kube).get_namespaced_custom_object(
        GROUP, VERSION, namespace, RLP_PLURAL, name
    )


async def limits_file(kube: client.ApiClient, namespace: str, target: str = "tasksync") -> LimitsFile:
    """The file as the service's pods would read it from the mounted ConfigMap."""
    try:
        configmap = await client.CoreV1Api(kube).read_namespaced_config_map(f"{target}-limits", namespace)
    except ApiException as exc:
        raise AssertionError(f"no limits ConfigMap yet: {exc.status}") from exc
    return decode_limits_file(configmap.data["limits.yaml"].encode())


def ready(obj: dict[str, Any]) -> dict[str, Any]:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Ready"), {})


async def wait_policy(
    kube: client.ApiClient, namespace: str, name: str, *, status: str = "True", generation: int | None = None
) -> dict[str, Any]:
    async def probe() -> dict[str, Any]:
        obj = await read_policy(kube, namespace, name)
        condition = ready(obj)
        assert condition.get("status") == status, condition
        assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"], obj["status"]
        assert generation is None or obj["status"].get("limitsGeneration") == generation, obj["status"]
        return obj

    return await eventually(probe)


async def test_two_policies_merge_by_priority_then_name(kube, namespace):
    # Same priority: "a-team" sorts before "b-team" and wins where both set a limit.
    await create_policy(
        kube, namespace, policy("b-team", {"maxConnectionsPerUser": 3, "maxFrameBytes": 4096})
    )
    await create_policy(
        kube, namespace, policy("a-team", {"maxConnectionsPerUser": 5, "inboundMessagesPerSecond": 2.5})
    )

    async def merged() -> LimitsFile:
        current = await limits_file(kube, namespace)
        assert current.sources == ["a-team", "b-team"], current
        return current

    current = await eventually(merged)
    assert current.limits == Limits(
        max_connections_per_user=5, inbound_messages_per_second=2.5, max_frame_bytes=4096
    )
    for name in ("a-team", "b-team"):
        status = (await wait_policy(kube, namespace, name, generation=current.generation))["status"]
        assert status["configMapName"] == "tasksync-limits"

    # Priority beats the name order; the generation moves on and both policies report it.
    await patch_policy(kube, namespace, "b-team", {"spec": {"priority": 10}})

    async def reordered() -> LimitsFile:
        newer = await limits_file(kube, namespace)
        assert newer.sources == ["b-team", "a-team"], newer
        return newer

    newer = await eventually(reordered)
    assert newer.generation > current.generation
    assert newer.limits.max_connections_per_user == 3
    assert newer.limits.inbound_messages_per_second == 2.5
    for name in ("a-team", "b-team"):
        await wait_policy(kube, namespace, name, generation=newer.generation)


async def test_policies_for_another_target_do_not_mix(kube, namespace):
    await create_policy(kube, namespace, policy("main", {"maxFrameBytes": 1000}))
    await create_policy(kube, namespace, policy("canary", {"maxFrameBytes": 2000}, target="tasksync-canary"))

    async def both() -> None:
        assert (await limits_file(kube, namespace)).limits.max_frame_bytes == 1000
        assert (await limits_file(kube, namespace, "tasksync-canary")).limits.max_frame_bytes == 2000

    await eventually(both)


async def test_invalid_merge_never_reaches_the_configmap(kube, namespace):
    # Each policy is valid on its own; together the burst (from "base") is below the rate
    # (from "boost", which wins on priority). The file must keep the last good generation.
    await create_policy(kube, namespace, policy("base", {"inboundBurst": 5, "inboundMessagesPerSecond": 5}))
    good = await eventually(lambda: limits_file(kube, namespace))
    await wait_policy(kube, namespace, "base", generation=good.generation)

    await create_policy(kube, namespace, policy("boost", {"inboundMessagesPerSecond": 50}, priority=5))
    refused = await wait_policy(kube, namespace, "boost", status="False")
    assert ready(refused)["reason"] == "InvalidLimits"
    assert "inbound_burst must be at least inbound_messages_per_second" in ready(refused)["message"]
    assert refused["status"]["limitsGeneration"] == good.generation
    base = await wait_policy(kube, namespace, "base", status="False")
    assert base["status"]["limitsGeneration"] == good.generation
    assert await limits_file(kube, namespace) == good

    # Fixing the combination applies it as the next generation.
    await patch_policy(kube, namespace, "boost", {"spec": {"limits": {"inboundBurst": 100}}})
    fixed = await wait_policy(kube, namespace, "boost", generation=good.generation + 1)
    assert fixed["status"]["limitsGeneration"] == good.generation + 1
    applied = await limits_file(kube, namespace)
    assert (applied.limits.inbound_messages_per_second, applied.limits.inbound_burst) == (50, 100)


async def test_policy_refused_by_the_crd_never_reaches_the_configmap(kube, namespace):
    await create_policy(
        kube, namespace, policy("sane", {"publishBurstPerKey": 10, "publishRequestsPerSecondPerKey": 10})
    )
    before = await eventually(lambda: limits_file(kube, namespace))

    with pytest.raises(ApiException) as refused:
        await create_policy(
            kube, namespace, policy("broken", {"publishBurstPerKey": 1, "publishRequestsPerSecondPerKey": 10})
        )
    assert refused.value.status == 422
    with pytest.raises(ApiException) as refused_update:
        await patch_policy(kube, namespace, "sane", {"spec": {"limits": {"publishBurstPerKey": 1}}})
    assert refused_update.value.status == 422

    # A later, valid change is the next thing the file shows: nothing of "broken" in between.
    await patch_policy(kube, namespace, "sane", {"spec": {"limits": {"maxFrameBytes": 2048}}})

    async def next_generation() -> LimitsFile:
        current = await limits_file(kube, namespace)
        assert current.generation == before.generation + 1, current
        return current

    current = await eventually(next_generation)
    assert current.sources == ["sane"]
    assert current.limits.publish_burst_per_key == 10


async def test_deleting_a_policy_rerenders_without_it(kube, namespace):
    await create_policy(kube, namespace, policy("keep", {"maxConnectionsPerProcess": 500}))
    await create_policy(kube, namespace, policy("drop", {"maxConnectionsPerUser": 2}, priority=1))

    async def both() -> LimitsFile:
        current = await limits_file(kube, namespace)
        assert current.sources == ["drop", "keep"], current
        return current

    both_file = await eventually(both)
    await client.CustomObjectsApi(kube).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, RLP_PLURAL, "drop"
    )

    async def without() -> LimitsFile:
        current = await limits_file(kube, namespace)
        assert current.sources == ["keep"], current
        return current

    remaining = await eventually(without)
    assert remaining.generation > both_file.generation
    assert remaining.limits == Limits(max_connections_per_process=500)
    await wait_policy(kube, namespace, "keep", generation=remaining.generation)


async def test_hand_edited_configmap_is_repaired_with_a_higher_generation(kube, namespace):
    await create_policy(kube, namespace, policy("only", {"maxFrameBytes": 8192}))
    original = await eventually(lambda: limits_file(kube, namespace))
    core = client.CoreV1Api(kube)

    # A valid file, even with a generation ahead of the operator's: the policies still win,
    # and the repair continues above the hand-written generation.
    await core.patch_namespaced_config_map(
        "tasksync-limits",
        namespace,
        {"data": {"limits.yaml": HAND_WRITTEN}},
    )

    async def repaired() -> LimitsFile:
        current = await limits_file(kube, namespace)
        assert current.generation == 100, current
        return current

    current = await eventually(repaired)
    assert current.limits == original.limits
    await wait_policy(kube, namespace, "only", generation=current.generation)

    # Deleted by hand: back, and the generation still does not go backwards.
    await core.delete_namespaced_config_map("tasksync-limits", namespace)

    async def recreated() -> LimitsFile:
        again = await limits_file(kube, namespace)
        assert again.generation > current.generation, again
        return again

    assert (await eventually(recreated)).limits == original.limits


def deployment(name: str) -> dict[str, Any]:
    """The TaskSync instance's Deployment, as the chart names it: after the policies' target."""
    labels = {"app.kubernetes.io/instance": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "tasksync", "image": "tasksync:test"}]},
            },
        },
    }


async def limits_owners(kube: client.ApiClient, namespace: str, target: str = "tasksync") -> list[dict[str, Any]]:
    configmap = await client.CoreV1Api(kube).read_namespaced_config_map(f"{target}-limits", namespace)
    return kube.sanitize_for_serialization(configmap)["metadata"].get("ownerReferences") or []


def owned_by(created: client.V1Deployment) -> list[dict[str, Any]]:
    """What the garbage collector needs to delete the ConfigMap with the Deployment (this API
    server runs no garbage collector: tests/cluster proves the deletion itself)."""
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": created.metadata.name,
            "uid": created.metadata.uid,
            "controller": False,
            "blockOwnerDeletion": False,
        }
    ]


async def test_the_limits_configmap_is_owned_by_the_targets_deployment(kube, namespace):
    created = await client.AppsV1Api(kube).create_namespaced_deployment(namespace, deployment("tasksync"))
    await create_policy(kube, namespace, policy("only", {"maxFrameBytes": 8192}))
    await wait_policy(kube, namespace, "only")
    assert await limits_owners(kube, namespace) == owned_by(created)


async def test_a_deployment_created_after_its_configmap_owns_it_from_the_next_resync(kube, operator_process):
    """Policies may come before the instance; nothing announces the Deployment to the operator,
    so the periodic resync hands the ConfigMap over, with its limits untouched."""
    namespace = f"adopt-{secrets.token_hex(4)}"  # outside the session operator's namespaces
    await client.CoreV1Api(kube).create_namespace({"metadata": {"name": namespace}})
    operator = operator_process(namespace, "--resync-interval=1")
    await operator.wait_live()
    await create_policy(kube, namespace, policy("early", {"maxFrameBytes": 8192}))
    await wait_policy(kube, namespace, "early")
    before = await limits_file(kube, namespace)
    assert await limits_owners(kube, namespace) == []

    created = await client.AppsV1Api(kube).create_namespaced_deployment(namespace, deployment("tasksync"))

    async def handed_over() -> None:
        assert await limits_owners(kube, namespace) == owned_by(created)

    await eventually(handed_over, timeout=60)
    assert await limits_file(kube, namespace) == before
