"""Unit tests of the pure parts: rendering Dapr Subscriptions, merging policies into the
limits file, conditions, backoff. No API server involved."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasksync.limits import Limits, LimitsFile, decode_limits_file, encode_limits_file
from tasksync_operator import conditions, ratelimits, subscriptions
from tasksync_operator.config import OperatorConfig
from tasksync_operator.model import (
    BulkSubscribe,
    ObjectRef,
    PolicyLimits,
    PolicySource,
    RateLimitPolicySpec,
    SubscriptionSource,
    TaskSyncSubscriptionSpec,
    limit_field_names,
    policy_source,
)

AT = "2026-01-01T00:00:00Z"
LATER = "2026-01-01T00:05:00Z"


def tss_source(name: str = "orders", uid: str = "uid-1", **spec: Any) -> SubscriptionSource:
    return SubscriptionSource(
        ref=ObjectRef(
            api_version="tasksync.io/v1alpha1",
            kind="TaskSyncSubscription",
            namespace="team",
            name=name,
            uid=uid,
            generation=3,
        ),
        spec=TaskSyncSubscriptionSpec(
            **{"pubsub_name": "pubsub", "topic": "task-events", "scopes": ("tasksync",), **spec}
        ),
    )


def rlp(name: str, priority: int = 0, status: dict[str, Any] | None = None, **limits: Any) -> PolicySource:
    return PolicySource(
        ref=ObjectRef(
            api_version="tasksync.io/v1alpha1",
            kind="RateLimitPolicy",
            namespace="team",
            name=name,
            uid=f"uid-{name}",
            generation=1,
        ),
        spec=RateLimitPolicySpec(target="tasksync", priority=priority, limits=PolicyLimits(**limits)),
        status=status or {},
    )


# --- Dapr Subscription rendering -------------------------------------------------------------------


def test_render_minimal_subscription():
    rendered = subscriptions.render_subscription(tss_source())
    assert rendered == {
        "apiVersion": "dapr.io/v2alpha1",
        "kind": "Subscription",
        "metadata": {
            "name": "orders",
            "namespace": "team",
            "labels": {
                "app.kubernetes.io/managed-by": "tasksync-operator",
                "tasksync.io/subscription": "orders",
            },
            "ownerReferences": [
                {
                    "apiVersion": "tasksync.io/v1alpha1",
                    "kind": "TaskSyncSubscription",
                    "name": "orders",
                    "uid": "uid-1",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        # Unset optional fields (dead letters, bulk when disabled, metadata) are left out.
        "spec": {"pubsubname": "pubsub", "topic": "task-events", "routes": {"default": "/dapr/task-events"}},
        "scopes": ["tasksync"],
    }


def test_render_full_subscription():
    source = tss_source(
        route="/custom",
        dead_letter_topic="dead",
        scopes=("a", "b"),
        metadata={"rawPayload": "true"},
        bulk_subscribe=BulkSubscribe(enabled=True, max_messages_count=7, max_await_duration_ms=9),
    )
    rendered = subscriptions.render_subscription(source)
    assert rendered["spec"] == {
        "pubsubname": "pubsub",
        "topic": "task-events",
        "routes": {"default": "/custom"},
        "deadLetterTopic": "dead",
        "bulkSubscribe": {"enabled": True, "maxMessagesCount": 7, "maxAwaitDurationMs": 9},
        "metadata": {"rawPayload": "true"},
    }
    assert rendered["scopes"] == ["a", "b"]


def test_a_spec_without_scopes_is_refused_not_defaulted():
    """No app id is right for every release, and a wrong one delivers to nobody: the operator
    never makes one up (the CRD refuses such an object; this guards objects built in code)."""
    with pytest.raises(msgspec.ValidationError, match="scopes"):
        msgspec.convert({"pubsubName": "pubsub", "topic": "task-events"}, TaskSyncSubscriptionSpec)
    spec = msgspec.convert(
        {"pubsubName": "pubsub", "topic": "task-events", "scopes": ["orders-tasksync"]}, TaskSyncSubscriptionSpec
    )
    assert subscriptions.render_subscription(tss_source(scopes=spec.scopes))["scopes"] == ["orders-tasksync"]


def test_ownership():
    source = tss_source()
    desired = subscriptions.render_subscription(source)
    assert subscriptions.ownership(desired, source) == "ours"
    # A previous incarnation (same name, another uid) is ours to take over.
    stale = subscriptions.render_subscription(tss_source(uid="old"))
    assert subscriptions.ownership(stale, source) == "ours"
    # ownerReference stripped by hand but our label still there.
    stripped = {"metadata": {"labels": {"app.kubernetes.io/managed-by": "tasksync-operator"}}}
    assert subscriptions.ownership(stripped, source) == "ours"
    # Created by someone else, or controlled by another kind or another source.
    assert subscriptions.ownership({"metadata": {"name": "orders"}}, source) == "foreign"
    other_kind = {
        "metadata": {
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "Deployment", "name": "orders", "controller": True}
            ]
        }
    }
    assert subscriptions.ownership(other_kind, source) == "foreign"
    other_source = subscriptions.render_subscription(tss_source(name="payments"))
    assert subscriptions.ownership(other_source, source) == "foreign"


def test_owned_by_ignores_non_controller_references():
    body = {
        "metadata": {
            "ownerReferences": [
                {
                    "apiVersion": "tasksync.io/v1alpha1",
                    "kind": "TaskSyncSubscription",
                    "name": "x",
                    "controller": False,
                }
            ]
        }
    }
    assert subscriptions.owned_by(body) is None
    assert subscriptions.owned_by(subscriptions.render_subscription(tss_source())) == "orders"


def test_needs_update_and_merge_for_update():
    source = tss_source()
    desired = subscriptions.render_subscription(source)
    existing = {
        **desired,
        "metadata": {
            **desired["metadata"],
            "resourceVersion": "42",
            "annotations": {"team": "note"},
            "labels": {**desired["metadata"]["labels"], "extra": "kept"},
        },
    }
    assert not subscriptions.needs_update(existing, desired)

    edited = {**existing, "spec": {**desired["spec"], "topic": "other"}}
    assert subscriptions.needs_update(edited, desired)
    assert subscriptions.needs_update({**existing, "scopes": ["x"]}, desired)
    assert subscriptions.needs_update(
        {**existing, "metadata": {**existing["metadata"], "labels": {}}}, desired
    )
    assert subscriptions.needs_update(subscriptions.render_subscription(tss_source(uid="old")), desired)

    merged = subscriptions.merged_for_update(edited, desired)
    assert merged["spec"] == desired["spec"]
    assert merged["metadata"]["resourceVersion"] == "42"
    assert merged["metadata"]["annotations"] == {"team": "note"}
    assert merged["metadata"]["labels"]["extra"] == "kept"
    assert not subscriptions.needs_update(merged, desired)


def test_subscription_status():
    source = tss_source()
    failing = subscriptions.subscription_status(
        {}, source, reason=subscriptions.REASON_DAPR_NOT_INSTALLED, message="no dapr", at=AT
    )
    assert failing["observedGeneration"] == 3
    assert failing["subscriptionName"] == "orders"
    assert failing["conditions"] == [
        {
            "type": "Ready",
            "status": "False",
            "reason": "DaprNotInstalled",
            "message": "no dapr",
            "observedGeneration": 3,
            "lastTransitionTime": AT,
        }
    ]
    ok = subscriptions.subscription_status(
        failing, source, reason=subscriptions.REASON_READY, message="ok", at=LATER
    )
    assert ok["conditions"][0]["status"] == "True"
    assert ok["conditions"][0]["lastTransitionTime"] == LATER


# --- conditions and backoff ---------------------------------------------------------------------------


def test_transition_time_moves_only_when_status_flips():
    ready = conditions.Condition(type="Ready", status="True", reason="A", message="m", observed_generation=1)
    first = conditions.with_condition([], ready, at=AT)
    again = conditions.with_condition(first, msgspec.structs.replace(ready, reason="B"), at=LATER)
    assert again[0]["lastTransitionTime"] == AT
    assert again[0]["reason"] == "B"
    flipped = conditions.with_condition(again, msgspec.structs.replace(ready, status="False"), at=LATER)
    assert flipped[0]["lastTransitionTime"] == LATER


def test_other_conditions_are_kept():
    other = {
        "type": "Degraded",
        "status": "False",
        "reason": "X",
        "message": "",
        "observedGeneration": 1,
        "lastTransitionTime": AT,
    }
    ready = conditions.Condition(type="Ready", status="True", reason="A", message="m", observed_generation=1)
    assert [c["type"] for c in conditions.with_condition([other], ready, at=AT)] == ["Degraded", "Ready"]


def test_retry_delay_doubles_up_to_the_cap():
    config = OperatorConfig(retry_initial_delay=1.0, retry_max_delay=30.0)
    assert [config.retry_delay(n) for n in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert config.retry_delay(10_000) == 30


# --- merging policies -----------------------------------------------------------------------------


def test_policy_limits_mirror_the_service_limits():
    assert tuple(f.name for f in msgspec.structs.fields(PolicyLimits)) == limit_field_names()


def test_merge_priority_then_name_field_by_field():
    merge = ratelimits.merge_policies(
        [
            rlp("zeta", priority=1, max_frame_bytes=100),
            rlp("beta", max_frame_bytes=200, inbound_burst=30),
            rlp("alpha", inbound_burst=40),
        ]
    )
    assert merge.sources == ("zeta", "alpha", "beta")
    assert merge.values == {"max_frame_bytes": 100, "inbound_burst": 40}
    assert merge.provenance == {"max_frame_bytes": "zeta", "inbound_burst": "alpha"}
    assert ratelimits.merged_limits(merge) == Limits(max_frame_bytes=100, inbound_burst=40)


def test_invalid_merge_names_the_policies():
    merge = ratelimits.merge_policies(
        [rlp("fast", priority=1, inbound_messages_per_second=50.0), rlp("base", inbound_burst=5)]
    )
    with pytest.raises(ratelimits.InvalidLimits) as invalid:
        ratelimits.merged_limits(merge)
    message = str(invalid.value)
    assert "inbound_burst must be at least inbound_messages_per_second" in message
    assert "inbound_messages_per_second from fast" in message
    assert "inbound_burst from base" in message


def test_out_of_bounds_value_is_refused_not_rendered():
    with pytest.raises(ratelimits.InvalidLimits):
        ratelimits.merged_limits(ratelimits.merge_policies([rlp("zero", max_frame_bytes=0)]))


NAMES = st.sampled_from(["a", "b", "c", "d", "e"])
INT_LIMITS = {
    "max_connections_per_user",
    "max_connections_per_process",
    "inbound_burst",
    "outbound_burst_per_user",
    "replay_burst_per_user",
    "publish_burst_per_key",
    "max_frame_bytes",
}


@st.composite
def policy_sets(draw: st.DrawFn) -> list[PolicySource]:
    names = draw(st.lists(NAMES, unique=True, max_size=5))
    policies = []
    for name in names:
        fields = draw(st.lists(st.sampled_from(limit_field_names()), unique=True))
        limits = {
            f: draw(st.integers(1, 10_000)) if f in INT_LIMITS else draw(st.floats(0.5, 500.0))
            for f in fields
        }
        policies.append(rlp(name, priority=draw(st.integers(0, 2)), **limits))
    return policies


# No per-example deadline: these run while API servers and builds load the machine.
@settings(deadline=None)
@given(policy_sets(), st.randoms())
def test_merge_takes_each_field_from_the_first_setter(policies, random):
    shuffled = list(policies)
    random.shuffle(shuffled)
    merge = ratelimits.merge_policies(shuffled)
    assert merge == ratelimits.merge_policies(policies)  # independent of watch order
    for field in limit_field_names():
        setters = [p for p in policies if getattr(p.spec.limits, field) is not None]
        if not setters:
            assert field not in merge.values
            continue
        winner = min(setters, key=lambda p: (-p.spec.priority, p.ref.name))
        assert merge.values[field] == getattr(winner.spec.limits, field)
        assert merge.provenance[field] == winner.ref.name


# --- the limits file and its generation ------------------------------------------------------------


def test_first_file_and_no_op():
    merge = ratelimits.merge_policies([rlp("a", max_frame_bytes=1024)])
    first = ratelimits.next_limits_file(merge, None, floor=0)
    assert first == LimitsFile(generation=1, limits=Limits(max_frame_bytes=1024), sources=["a"])
    assert ratelimits.next_limits_file(merge, first, floor=1) is None


def test_generation_grows_past_file_and_floor():
    merge = ratelimits.merge_policies([rlp("a", max_frame_bytes=2048)])
    current = LimitsFile(generation=4, limits=Limits(max_frame_bytes=1024), sources=["a"])
    assert ratelimits.next_limits_file(merge, current, floor=2).generation == 5
    # A policy has seen generation 9 (the ConfigMap was deleted or replaced by an older copy).
    assert ratelimits.next_limits_file(merge, None, floor=9).generation == 10
    same = LimitsFile(generation=3, limits=Limits(max_frame_bytes=2048), sources=["a"])
    assert ratelimits.next_limits_file(merge, same, floor=9).generation == 10


def test_sources_change_alone_is_a_new_generation():
    current = LimitsFile(generation=1, limits=Limits(max_frame_bytes=1024), sources=["a"])
    merge = ratelimits.merge_policies([rlp("a", max_frame_bytes=1024), rlp("b")])
    assert ratelimits.next_limits_file(merge, current, floor=1).sources == ["a", "b"]


def test_no_policies():
    empty = ratelimits.merge_policies([])
    # Nothing to write for an instance that never had a policy...
    assert ratelimits.next_limits_file(empty, None, floor=0) is None
    # ...but when the last policy goes, the file returns to the defaults.
    current = LimitsFile(generation=3, limits=Limits(max_frame_bytes=1024), sources=["gone"])
    assert ratelimits.next_limits_file(empty, current, floor=3) == LimitsFile(
        generation=4, limits=Limits(), sources=[]
    )


@settings(deadline=None)
@given(st.lists(policy_sets(), min_size=1, max_size=6))
def test_generation_never_goes_backwards(history):
    current: LimitsFile | None = None
    for policies in history:
        merge = ratelimits.merge_policies(policies)
        try:
            written = ratelimits.next_limits_file(merge, current, floor=current.generation if current else 0)
        except ratelimits.InvalidLimits:
            continue
        if written is not None:
            assert current is None or written.generation > current.generation
            current = written
        assert current is None or (current.limits, current.sources) == (
            ratelimits.merged_limits(merge),
            list(merge.sources),
        )


def test_generation_floor():
    assert ratelimits.generation_floor([]) == 0
    assert ratelimits.generation_floor([rlp("a", status={"limitsGeneration": 7}), rlp("b")]) == 7


def test_configmap_round_trips_through_the_service_loader():
    limits_file = LimitsFile(
        generation=12, limits=Limits(inbound_burst=50, max_frame_bytes=4096), sources=["x", "y"]
    )
    configmap = ratelimits.render_configmap("team", "tasksync", limits_file)
    assert configmap["metadata"] == {
        "name": "tasksync-limits",
        "namespace": "team",
        "labels": {"app.kubernetes.io/managed-by": "tasksync-operator", "tasksync.io/target": "tasksync"},
    }
    assert decode_limits_file(configmap["data"]["limits.yaml"].encode()) == limits_file
    assert ratelimits.read_limits_file(configmap) == limits_file


def test_read_limits_file():
    assert ratelimits.read_limits_file(None) is None
    assert ratelimits.read_limits_file({"data": {}}) is None
    with pytest.raises(ValueError, match=r"invalid limits file: .*generation"):
        ratelimits.read_limits_file({"data": {"limits.yaml": "generation: -1\n"}})
    raw = encode_limits_file(LimitsFile(generation=2)).decode()
    assert ratelimits.read_limits_file({"data": {"limits.yaml": raw}}).generation == 2


def test_policy_status_applied_and_refused():
    ref = rlp("a").ref
    applied = ratelimits.policy_status(ref, "tasksync", {}, target_generation=5, problem=None, at=AT)
    assert applied == {
        "observedGeneration": 1,
        "configMapName": "tasksync-limits",
        "limitsGeneration": 5,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "LimitsApplied",
                "message": "limits generation 5 is in force",
                "observedGeneration": 1,
                "lastTransitionTime": AT,
            }
        ],
    }
    refused = ratelimits.policy_status(
        ref, "tasksync", applied, target_generation=5, problem="too fast", at=LATER
    )
    (condition,) = refused["conditions"]
    assert (condition["status"], condition["reason"], condition["lastTransitionTime"]) == (
        "False",
        "InvalidLimits",
        LATER,
    )
    assert condition["message"] == "merged limits refused: too fast; generation 5 stays in force"
    never_written = ratelimits.policy_status(ref, "tasksync", {}, target_generation=None, problem="x", at=AT)
    assert "limitsGeneration" not in never_written
    assert never_written["conditions"][0]["message"] == "merged limits refused: x"


def test_policy_source_from_a_body():
    body = {
        "apiVersion": "tasksync.io/v1alpha1",
        "kind": "RateLimitPolicy",
        "metadata": {"namespace": "team", "name": "p", "uid": "u", "generation": 2, "deletionTimestamp": AT},
        "spec": {
            "target": "tasksync",
            "priority": 3,
            "limits": {"maxFrameBytes": 10, "inboundMessagesPerSecond": 4},
        },
        "status": {"limitsGeneration": 6},
    }
    source = policy_source(body)
    assert source.deleting
    assert source.spec.limits == PolicyLimits(max_frame_bytes=10, inbound_messages_per_second=4.0)
    assert source.ref.generation == 2
    assert ratelimits.generation_floor([source]) == 6


def test_the_limits_configmap_is_owned_by_the_targets_deployment_once_it_exists():
    limits_file = LimitsFile(generation=3, limits=Limits(), sources=["a"])
    unowned = ratelimits.render_configmap("ns", "orders", limits_file)
    assert "ownerReferences" not in unowned["metadata"]
    owner = ratelimits.deployment_owner({"metadata": {"name": "orders", "uid": "u-1", "namespace": "ns"}})
    owned = ratelimits.render_configmap("ns", "orders", limits_file, owner=owner)
    assert owned["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": "orders",
            "uid": "u-1",
            "controller": False,
            "blockOwnerDeletion": False,
        }
    ]
    assert owned["data"] == unowned["data"]
    # Written before the Deployment, or owned by an earlier Deployment of the same name.
    assert ratelimits.lacks_owner(unowned, owner)
    earlier = ratelimits.render_configmap("ns", "orders", limits_file, owner={**owner, "uid": "old"})
    assert ratelimits.lacks_owner(earlier, owner)
    assert not ratelimits.lacks_owner(owned, owner)
    assert not ratelimits.lacks_owner(unowned, None)
    assert not ratelimits.lacks_owner(None, owner)
