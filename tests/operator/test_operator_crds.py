"""The CRDs in charts/tasksync/crds/ as the API server enforces them: every validation rule
refuses a bad object, defaults match the operator's model, printer columns show up."""

from __future__ import annotations

import copy
import json
import secrets
from typing import Any

import msgspec
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from tasksync_operator.model import (
    GROUP,
    RLP_PLURAL,
    TSS_PLURAL,
    VERSION,
    RateLimitPolicySpec,
    TaskSyncSubscriptionSpec,
)

# Objects are created in "default", which the operator under test does not watch: these tests
# are about the API server alone.
NAMESPACE = "default"

VALID_TSS: dict[str, Any] = {"pubsubName": "pubsub", "topic": "task-events", "scopes": ["orders-tasksync"]}
VALID_RLP: dict[str, Any] = {"target": "tasksync", "limits": {"maxConnectionsPerUser": 5}}


def body(kind: str, spec: dict[str, Any] | None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": kind,
        "metadata": {"name": f"v-{secrets.token_hex(4)}"},
    }
    if spec is not None:
        obj["spec"] = spec
    return obj


async def create(kube: client.ApiClient, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
    return await client.CustomObjectsApi(kube).create_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, plural, obj
    )


def with_spec(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(base)
    spec.update(changes)
    return spec


def with_limits(**limits: Any) -> dict[str, Any]:
    return {"target": "tasksync", "limits": limits}


# (case id, spec, a fragment of the API server's message)
TSS_INVALID = [
    ("spec-required", None, "spec: Required value"),
    ("pubsubName-required", {"topic": "t"}, "spec.pubsubName: Required value"),
    ("topic-required", {"pubsubName": "pubsub"}, "spec.topic: Required value"),
    (
        "scopes-required",
        {"pubsubName": "pubsub", "topic": "t"},
        "scopes is required: list the Dapr app ID of the TaskSync instance",
    ),
    ("pubsubName-pattern", with_spec(VALID_TSS, pubsubName="Pub_Sub"), "spec.pubsubName: Invalid value"),
    ("pubsubName-maxLength", with_spec(VALID_TSS, pubsubName="p" * 254), "spec.pubsubName: Too long"),
    ("topic-pattern", with_spec(VALID_TSS, topic="task events"), "spec.topic: Invalid value"),
    ("topic-minLength", with_spec(VALID_TSS, topic=""), "spec.topic"),
    ("topic-maxLength", with_spec(VALID_TSS, topic="t" * 250), "spec.topic: Too long"),
    ("route-pattern", with_spec(VALID_TSS, route="dapr/task-events"), "spec.route: Invalid value"),
    ("route-maxLength", with_spec(VALID_TSS, route="/" + "r" * 1024), "spec.route: Too long"),
    (
        "deadLetterTopic-pattern",
        with_spec(VALID_TSS, deadLetterTopic="dead letters"),
        "spec.deadLetterTopic: Invalid value",
    ),
    (
        "deadLetterTopic-differs-from-topic",
        with_spec(VALID_TSS, deadLetterTopic="task-events"),
        "deadLetterTopic must differ from topic",
    ),
    (
        "bulk-maxMessagesCount-minimum",
        with_spec(VALID_TSS, bulkSubscribe={"maxMessagesCount": 0}),
        "spec.bulkSubscribe.maxMessagesCount",
    ),
    (
        "bulk-maxMessagesCount-maximum",
        with_spec(VALID_TSS, bulkSubscribe={"maxMessagesCount": 10001}),
        "spec.bulkSubscribe.maxMessagesCount",
    ),
    (
        "bulk-maxAwaitDurationMs-minimum",
        with_spec(VALID_TSS, bulkSubscribe={"maxAwaitDurationMs": 0}),
        "spec.bulkSubscribe.maxAwaitDurationMs",
    ),
    (
        "bulk-maxAwaitDurationMs-maximum",
        with_spec(VALID_TSS, bulkSubscribe={"maxAwaitDurationMs": 60001}),
        "spec.bulkSubscribe.maxAwaitDurationMs",
    ),
    ("scopes-minItems", with_spec(VALID_TSS, scopes=[]), "spec.scopes"),
    (
        "scopes-maxItems",
        with_spec(VALID_TSS, scopes=[f"app-{i}" for i in range(65)]),
        "spec.scopes: Too many",
    ),
    (
        "scopes-unique",
        with_spec(VALID_TSS, scopes=["tasksync", "tasksync"]),
        "spec.scopes[1]: Duplicate value",
    ),
    ("scopes-item-pattern", with_spec(VALID_TSS, scopes=["TaskSync"]), "spec.scopes[0]: Invalid value"),
    ("scopes-item-maxLength", with_spec(VALID_TSS, scopes=["a" * 64]), "spec.scopes[0]: Too long"),
    (
        "metadata-key-rule",
        with_spec(VALID_TSS, metadata={"bad key": "x"}),
        "metadata keys must start with a letter or digit",
    ),
    (
        "metadata-maxProperties",
        with_spec(VALID_TSS, metadata={f"k{i}": "v" for i in range(65)}),
        "spec.metadata: Too many",
    ),
    (
        "metadata-value-maxLength",
        with_spec(VALID_TSS, metadata={"k": "v" * 4097}),
        "spec.metadata.k: Too long",
    ),
]

RLP_INVALID = [
    ("spec-required", None, "spec: Required value"),
    ("target-required", {"limits": {"maxFrameBytes": 1024}}, "spec.target: Required value"),
    ("limits-required", {"target": "tasksync"}, "spec.limits: Required value"),
    ("target-pattern", with_spec(VALID_RLP, target="TaskSync"), "spec.target: Invalid value"),
    ("target-maxLength", with_spec(VALID_RLP, target="t" * 57), "spec.target: Too long"),
    ("priority-minimum", with_spec(VALID_RLP, priority=-1), "spec.priority"),
    ("priority-maximum", with_spec(VALID_RLP, priority=1001), "spec.priority"),
    ("limits-minProperties", with_spec(VALID_RLP, limits={}), "spec.limits"),
    (
        "maxConnectionsPerUser-minimum",
        with_limits(maxConnectionsPerUser=0),
        "spec.limits.maxConnectionsPerUser",
    ),
    (
        "maxConnectionsPerProcess-minimum",
        with_limits(maxConnectionsPerProcess=0),
        "spec.limits.maxConnectionsPerProcess",
    ),
    (
        "inboundMessagesPerSecond-exclusiveMinimum",
        with_limits(inboundMessagesPerSecond=0),
        "spec.limits.inboundMessagesPerSecond",
    ),
    ("inboundBurst-minimum", with_limits(inboundBurst=0), "spec.limits.inboundBurst"),
    (
        "outboundEventsPerSecondPerUser-exclusiveMinimum",
        with_limits(outboundEventsPerSecondPerUser=0),
        "spec.limits.outboundEventsPerSecondPerUser",
    ),
    ("outboundBurstPerUser-minimum", with_limits(outboundBurstPerUser=0), "spec.limits.outboundBurstPerUser"),
    (
        "replayEventsPerSecondPerUser-exclusiveMinimum",
        with_limits(replayEventsPerSecondPerUser=0),
        "spec.limits.replayEventsPerSecondPerUser",
    ),
    ("replayBurstPerUser-minimum", with_limits(replayBurstPerUser=0), "spec.limits.replayBurstPerUser"),
    (
        "publishRequestsPerSecondPerKey-exclusiveMinimum",
        with_limits(publishRequestsPerSecondPerKey=0),
        "spec.limits.publishRequestsPerSecondPerKey",
    ),
    ("publishBurstPerKey-minimum", with_limits(publishBurstPerKey=0), "spec.limits.publishBurstPerKey"),
    ("maxFrameBytes-minimum", with_limits(maxFrameBytes=0), "spec.limits.maxFrameBytes"),
    (
        "inboundBurst-vs-rate",
        with_limits(inboundBurst=4, inboundMessagesPerSecond=4.5),
        "inboundBurst must be at least inboundMessagesPerSecond",
    ),
    (
        "outboundBurst-vs-rate",
        with_limits(outboundBurstPerUser=9, outboundEventsPerSecondPerUser=10),
        "outboundBurstPerUser must be at least outboundEventsPerSecondPerUser",
    ),
    (
        "replayBurst-vs-rate",
        with_limits(replayBurstPerUser=99, replayEventsPerSecondPerUser=100),
        "replayBurstPerUser must be at least replayEventsPerSecondPerUser",
    ),
    (
        "publishBurst-vs-rate",
        with_limits(publishBurstPerKey=1, publishRequestsPerSecondPerKey=2),
        "publishBurstPerKey must be at least publishRequestsPerSecondPerKey",
    ),
    (
        "connections-user-vs-process",
        with_limits(maxConnectionsPerUser=11, maxConnectionsPerProcess=10),
        "maxConnectionsPerUser cannot exceed maxConnectionsPerProcess",
    ),
]


def refusal(exc: ApiException) -> str:
    assert exc.status == 422, exc
    return json.loads(exc.body)["message"]


@pytest.mark.parametrize(
    ("spec", "expected"), [case[1:] for case in TSS_INVALID], ids=[case[0] for case in TSS_INVALID]
)
async def test_tasksyncsubscription_rule_refuses(kube, spec, expected):
    with pytest.raises(ApiException) as refused:
        await create(kube, TSS_PLURAL, body("TaskSyncSubscription", spec))
    assert expected in refusal(refused.value)


@pytest.mark.parametrize(
    ("spec", "expected"), [case[1:] for case in RLP_INVALID], ids=[case[0] for case in RLP_INVALID]
)
async def test_ratelimitpolicy_rule_refuses(kube, spec, expected):
    with pytest.raises(ApiException) as refused:
        await create(kube, RLP_PLURAL, body("RateLimitPolicy", spec))
    assert expected in refusal(refused.value)


async def test_ratelimitpolicy_target_is_immutable(kube):
    created = await create(kube, RLP_PLURAL, body("RateLimitPolicy", VALID_RLP))
    with pytest.raises(ApiException) as refused:
        await client.CustomObjectsApi(kube).patch_namespaced_custom_object(
            GROUP,
            VERSION,
            NAMESPACE,
            RLP_PLURAL,
            created["metadata"]["name"],
            {"spec": {"target": "elsewhere"}},
            _content_type="application/merge-patch+json",
        )
    assert "target is immutable" in refusal(refused.value)


async def test_server_defaults_match_the_operator_model(kube):
    tss = await create(kube, TSS_PLURAL, body("TaskSyncSubscription", VALID_TSS))
    assert msgspec.convert(tss["spec"], TaskSyncSubscriptionSpec) == TaskSyncSubscriptionSpec(
        pubsub_name="pubsub", topic="task-events", scopes=("orders-tasksync",)
    )
    assert tss["spec"]["bulkSubscribe"] == {
        "enabled": False,
        "maxMessagesCount": 100,
        "maxAwaitDurationMs": 40,
    }

    rlp = await create(kube, RLP_PLURAL, body("RateLimitPolicy", VALID_RLP))
    assert rlp["spec"]["priority"] == 0
    assert (
        msgspec.convert(rlp["spec"], RateLimitPolicySpec).priority == RateLimitPolicySpec(target="t").priority
    )


async def table(kube: client.ApiClient, plural: str) -> dict[str, Any]:
    """What `kubectl get` shows: the server-side Table rendering of the printer columns."""
    response = await kube.call_api(
        f"/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}/{plural}",
        "GET",
        header_params={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
        auth_settings=["BearerToken"],
        _preload_content=False,
    )
    return json.loads(await response.read())


async def test_printer_columns(kube):
    await create(kube, TSS_PLURAL, body("TaskSyncSubscription", VALID_TSS))
    await create(kube, RLP_PLURAL, body("RateLimitPolicy", VALID_RLP))

    tss_columns = [
        c["name"] for c in (await table(kube, TSS_PLURAL))["columnDefinitions"] if c["priority"] == 0
    ]
    assert tss_columns == ["Name", "Ready", "Topic", "Age"]
    rlp_columns = [
        c["name"] for c in (await table(kube, RLP_PLURAL))["columnDefinitions"] if c["priority"] == 0
    ]
    assert rlp_columns == ["Name", "Ready", "Target", "Priority", "Generation", "Age"]
