"""Typed views of the operator's custom resources, and the names and labels it uses.

The CRD manifests in charts/tasksync/crds/ are the API contract; these Structs mirror their
`spec`s so handlers never poke at raw dicts. The API server applies the CRD defaults before the
operator sees an object, so the Struct defaults only matter for objects built in code (tests,
rendering helpers); tests/operator/test_operator_crds.py keeps both sets of defaults equal.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from tasksync.limits import Limits

if TYPE_CHECKING:
    # For the annotation only: these typed views need no kopf at run time.
    from kopf import RawBody

GROUP = "tasksync.io"
VERSION = "v1alpha1"

TSS_KIND = "TaskSyncSubscription"
TSS_PLURAL = "tasksyncsubscriptions"
RLP_PLURAL = "ratelimitpolicies"

DAPR_GROUP = "dapr.io"
DAPR_VERSION = "v2alpha1"
DAPR_PLURAL = "subscriptions"

# Labels on everything the operator writes. `managed-by` is how the operator recognises its own
# objects (and how `kubectl get -l` finds them); the second label names the source resource.
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "tasksync-operator"
SUBSCRIPTION_SOURCE_LABEL = "tasksync.io/subscription"
LIMITS_TARGET_LABEL = "tasksync.io/target"


class BulkSubscribe(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    enabled: bool = False
    max_messages_count: int = 100
    # Low on purpose: TaskSync promises delivery within a second, and Dapr holds a partial batch
    # for this long before delivering it.
    max_await_duration_ms: int = 40


class TaskSyncSubscriptionSpec(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    pubsub_name: str
    topic: str
    route: str = "/dapr/task-events"
    dead_letter_topic: str | None = None
    bulk_subscribe: BulkSubscribe = BulkSubscribe()
    # No default: the Dapr app id is the TaskSync release's, which only the author knows, and a
    # wrong one silently delivers the events to nobody.
    scopes: tuple[str, ...]
    metadata: dict[str, str] = {}


class PolicyLimits(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The limits one RateLimitPolicy sets. None means "not set here": inherited in the merge.

    Attribute names are exactly those of `tasksync.limits.Limits`, so merging is field by field
    over `msgspec.structs.fields(Limits)`; the camelCase names are the CRD's.
    """

    max_connections_per_user: int | None = None
    max_connections_per_process: int | None = None
    inbound_messages_per_second: float | None = None
    inbound_burst: int | None = None
    outbound_events_per_second_per_user: float | None = None
    outbound_burst_per_user: int | None = None
    replay_events_per_second_per_user: float | None = None
    replay_burst_per_user: int | None = None
    publish_requests_per_second_per_key: float | None = None
    publish_burst_per_key: int | None = None
    max_frame_bytes: int | None = None


class RateLimitPolicySpec(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    target: str
    priority: int = 0
    limits: PolicyLimits = PolicyLimits()


class ObjectRef(msgspec.Struct, frozen=True, kw_only=True):
    """Enough of an object's identity to own things, post events and patch its status."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str
    generation: int = 0

    def as_body(self) -> RawBody:
        """The minimal body kopf needs to post a Kubernetes event about this object."""
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "metadata": {"namespace": self.namespace, "name": self.name, "uid": self.uid},
        }


class SubscriptionSource(msgspec.Struct, frozen=True, kw_only=True):
    """A TaskSyncSubscription as the operator indexes it, with the status it last reported."""

    ref: ObjectRef
    spec: TaskSyncSubscriptionSpec
    status: dict[str, Any] = {}
    deleting: bool = False


class PolicySource(msgspec.Struct, frozen=True, kw_only=True):
    """A RateLimitPolicy as the operator indexes it, with the status it last reported."""

    ref: ObjectRef
    spec: RateLimitPolicySpec
    status: dict[str, Any] = {}
    deleting: bool = False


def object_ref(body: Mapping[str, Any]) -> ObjectRef:
    meta = body["metadata"]
    return ObjectRef(
        api_version=body["apiVersion"],
        kind=body["kind"],
        namespace=meta["namespace"],
        name=meta["name"],
        uid=meta["uid"],
        generation=meta.get("generation", 0),
    )


def subscription_source(body: Mapping[str, Any]) -> SubscriptionSource:
    return SubscriptionSource(
        ref=object_ref(body),
        spec=msgspec.convert(dict(body.get("spec") or {}), TaskSyncSubscriptionSpec),
        status=dict(body.get("status") or {}),
        deleting=body["metadata"].get("deletionTimestamp") is not None,
    )


def policy_source(body: Mapping[str, Any]) -> PolicySource:
    return PolicySource(
        ref=object_ref(body),
        spec=msgspec.convert(dict(body.get("spec") or {}), RateLimitPolicySpec),
        status=dict(body.get("status") or {}),
        deleting=body["metadata"].get("deletionTimestamp") is not None,
    )


def limit_field_names() -> tuple[str, ...]:
    """The limit names, in the order of `tasksync.limits.Limits`."""
    return tuple(field.name for field in msgspec.structs.fields(Limits))
