"""TaskSyncSubscription -> Dapr Subscription, against a real API server with the operator running."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes_asyncio import client

from tasksync_operator.model import DAPR_GROUP, DAPR_PLURAL, DAPR_VERSION, GROUP, TSS_PLURAL, VERSION
from tests.operator.operator_testkit import (
    DAPR_CRD,
    apply_crd,
    create_tss,
    eventually,
    load_yaml,
    read_subscription,
    read_tss,
    ready,
    remove_dapr_crd,
    tss,
    wait_ready,
)

pytestmark = pytest.mark.usefixtures("operator")


async def test_subscription_created_with_spec_owner_and_status(kube, namespace, dapr_crd):
    body = tss(
        "orders",
        topic="orders-events",
        deadLetterTopic="orders-dead",
        bulkSubscribe={"enabled": True, "maxMessagesCount": 50},
        scopes=["tasksync", "tasksync-canary"],
        metadata={"rawPayload": "false"},
    )
    created = await create_tss(kube, namespace, body)

    source = await wait_ready(kube, namespace, "orders", reason="SubscriptionReady")
    assert source["status"]["subscriptionName"] == "orders"

    subscription = await read_subscription(kube, namespace, "orders")
    assert subscription["spec"] == {
        "pubsubname": "pubsub",
        "topic": "orders-events",
        "routes": {"default": "/dapr/task-events"},
        "deadLetterTopic": "orders-dead",
        "bulkSubscribe": {"enabled": True, "maxMessagesCount": 50, "maxAwaitDurationMs": 40},
        "metadata": {"rawPayload": "false"},
    }
    assert subscription["scopes"] == ["tasksync", "tasksync-canary"]
    assert subscription["metadata"]["ownerReferences"] == [
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "TaskSyncSubscription",
            "name": "orders",
            "uid": created["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert subscription["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "tasksync-operator"

    async def event_posted() -> None:
        events = await client.CoreV1Api(kube).list_namespaced_event(
            namespace, field_selector="involvedObject.kind=TaskSyncSubscription,involvedObject.name=orders"
        )
        assert "SubscriptionCreated" in {event.reason for event in events.items}

    await eventually(event_posted)


async def test_update_reaches_the_subscription(kube, namespace, dapr_crd):
    await create_tss(kube, namespace, tss("updates"))
    await wait_ready(kube, namespace, "updates")

    await client.CustomObjectsApi(kube).patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        TSS_PLURAL,
        "updates",
        {"spec": {"topic": "renamed", "route": "/dapr/v2/events", "scopes": ["other-app"]}},
        _content_type="application/merge-patch+json",
    )

    async def changed() -> None:
        subscription = await read_subscription(kube, namespace, "updates")
        assert subscription["spec"]["topic"] == "renamed", subscription["spec"]
        assert subscription["spec"]["routes"] == {"default": "/dapr/v2/events"}
        assert subscription["scopes"] == ["other-app"]

    await eventually(changed)
    source = await wait_ready(kube, namespace, "updates")
    assert source["metadata"]["generation"] == 2


async def test_hand_edit_is_repaired(kube, namespace, dapr_crd):
    await create_tss(kube, namespace, tss("drift", topic="kept"))
    await wait_ready(kube, namespace, "drift")
    custom = client.CustomObjectsApi(kube)

    # Someone "fixes" the Subscription by hand: another topic, an extra route rule, our label gone,
    # plus an annotation of their own (which is not ours to remove).
    await custom.patch_namespaced_custom_object(
        DAPR_GROUP,
        DAPR_VERSION,
        namespace,
        DAPR_PLURAL,
        "drift",
        {
            "metadata": {
                "labels": {"app.kubernetes.io/managed-by": None},
                "annotations": {"note": "hand edit"},
            },
            "spec": {"topic": "hijacked", "routes": {"rules": [{"match": "true", "path": "/elsewhere"}]}},
        },
        _content_type="application/merge-patch+json",
    )

    async def repaired() -> dict[str, Any]:
        subscription = await read_subscription(kube, namespace, "drift")
        assert subscription["spec"]["topic"] == "kept", subscription["spec"]
        assert subscription["spec"]["routes"] == {"default": "/dapr/task-events"}
        assert subscription["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "tasksync-operator"
        return subscription

    subscription = await eventually(repaired)
    assert subscription["metadata"]["annotations"]["note"] == "hand edit"

    async def drift_reported() -> None:
        events = await client.CoreV1Api(kube).list_namespaced_event(
            namespace, field_selector="involvedObject.kind=TaskSyncSubscription,involvedObject.name=drift"
        )
        assert "DriftRepaired" in {event.reason for event in events.items}

    await eventually(drift_reported)

    # Deleted by hand: recreated.
    await custom.delete_namespaced_custom_object(DAPR_GROUP, DAPR_VERSION, namespace, DAPR_PLURAL, "drift")

    async def recreated() -> None:
        again = await read_subscription(kube, namespace, "drift")
        assert again["metadata"]["uid"] != subscription["metadata"]["uid"]
        assert again["spec"]["topic"] == "kept"

    await eventually(recreated)


async def test_foreign_subscription_is_a_conflict_until_removed(kube, namespace, dapr_crd):
    custom = client.CustomObjectsApi(kube)
    foreign = {
        "apiVersion": f"{DAPR_GROUP}/{DAPR_VERSION}",
        "kind": "Subscription",
        "metadata": {"name": "taken"},
        "spec": {"pubsubname": "pubsub", "topic": "theirs", "routes": {"default": "/theirs"}},
    }
    await custom.create_namespaced_custom_object(DAPR_GROUP, DAPR_VERSION, namespace, DAPR_PLURAL, foreign)
    await create_tss(kube, namespace, tss("taken"))

    conflicted = await wait_ready(kube, namespace, "taken", status="False", reason="Conflict")
    assert "not managed by this TaskSyncSubscription" in ready(conflicted)["message"]
    untouched = await read_subscription(kube, namespace, "taken")
    assert untouched["spec"]["topic"] == "theirs"

    await custom.delete_namespaced_custom_object(DAPR_GROUP, DAPR_VERSION, namespace, DAPR_PLURAL, "taken")
    await wait_ready(kube, namespace, "taken", reason="SubscriptionReady")
    assert (await read_subscription(kube, namespace, "taken"))["spec"]["topic"] == "task-events"


async def test_dapr_not_installed_then_recovers(kube, namespace):
    await remove_dapr_crd(kube)

    await create_tss(kube, namespace, tss("early"))
    waiting = await wait_ready(kube, namespace, "early", status="False", reason="DaprNotInstalled")
    assert "install Dapr" in ready(waiting)["message"]

    await apply_crd(kube, load_yaml(DAPR_CRD))
    await wait_ready(kube, namespace, "early", reason="SubscriptionReady")
    await eventually(lambda: read_subscription(kube, namespace, "early"))


async def test_namespaces_outside_the_watch_are_left_alone(kube, dapr_crd):
    outside = "unwatched-ns"
    await client.CoreV1Api(kube).create_namespace({"metadata": {"name": outside}})
    await create_tss(kube, outside, tss("ignored"))
    # A watched namespace created afterwards is served; by then the other one would have been too.
    watched = "e2e-after-unwatched"
    await client.CoreV1Api(kube).create_namespace({"metadata": {"name": watched}})
    await create_tss(kube, watched, tss("served"))
    await wait_ready(kube, watched, "served")

    assert "status" not in await read_tss(kube, outside, "ignored")
    with pytest.raises(AssertionError):
        await read_subscription(kube, outside, "ignored")
