"""TaskSyncSubscription -> Dapr Subscription: pure rendering and comparison, no API calls."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Literal

import msgspec

from tasksync_operator import conditions
from tasksync_operator.model import (
    DAPR_GROUP,
    DAPR_VERSION,
    GROUP,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    SUBSCRIPTION_SOURCE_LABEL,
    TSS_KIND,
    SubscriptionSource,
)

REASON_READY = "SubscriptionReady"
REASON_DAPR_NOT_INSTALLED = "DaprNotInstalled"
REASON_CONFLICT = "Conflict"
REASON_API_ERROR = "ApiError"


class DaprRoutes(msgspec.Struct, frozen=True):
    default: str


class DaprBulkSubscribe(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    enabled: bool
    max_messages_count: int
    max_await_duration_ms: int


class DaprSubscriptionSpec(msgspec.Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=True):
    """`spec` of a dapr.io/v2alpha1 Subscription (the fields TaskSync uses)."""

    pubsubname: str
    topic: str
    routes: DaprRoutes
    dead_letter_topic: str | None = None
    bulk_subscribe: DaprBulkSubscribe | None = None
    metadata: dict[str, str] = {}


def owner_reference(source: SubscriptionSource) -> dict[str, Any]:
    # controller=True makes this the one owner that manages the Subscription; blockOwnerDeletion
    # keeps a foreground delete of the TaskSyncSubscription waiting until Dapr's object is gone.
    return {
        "apiVersion": source.ref.api_version,
        "kind": source.ref.kind,
        "name": source.ref.name,
        "uid": source.ref.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def labels(source: SubscriptionSource) -> dict[str, str]:
    return {MANAGED_BY_LABEL: MANAGED_BY, SUBSCRIPTION_SOURCE_LABEL: source.ref.name}


def render_spec(source: SubscriptionSource) -> dict[str, Any]:
    spec = source.spec
    bulk = spec.bulk_subscribe
    rendered = DaprSubscriptionSpec(
        pubsubname=spec.pubsub_name,
        topic=spec.topic,
        routes=DaprRoutes(default=spec.route),
        dead_letter_topic=spec.dead_letter_topic,
        # Dapr treats an absent bulkSubscribe as disabled; leaving it out keeps the object minimal.
        bulk_subscribe=DaprBulkSubscribe(
            enabled=True,
            max_messages_count=bulk.max_messages_count,
            max_await_duration_ms=bulk.max_await_duration_ms,
        )
        if bulk.enabled
        else None,
        metadata=dict(spec.metadata),
    )
    return msgspec.to_builtins(rendered)


def render_subscription(source: SubscriptionSource) -> dict[str, Any]:
    """The whole Subscription object the operator wants for `source`, named like it."""
    return {
        "apiVersion": f"{DAPR_GROUP}/{DAPR_VERSION}",
        "kind": "Subscription",
        "metadata": {
            "name": source.ref.name,
            "namespace": source.ref.namespace,
            "labels": labels(source),
            "ownerReferences": [owner_reference(source)],
        },
        "spec": render_spec(source),
        "scopes": list(source.spec.scopes),
    }


def _controller(meta: Mapping[str, Any]) -> Mapping[str, Any] | None:
    return next((ref for ref in meta.get("ownerReferences") or [] if ref.get("controller")), None)


def owned_by(existing: Mapping[str, Any]) -> str | None:
    """Name of the TaskSyncSubscription controlling this Subscription, if one does."""
    controller = _controller(existing.get("metadata") or {})
    if controller is None:
        return None
    group = str(controller.get("apiVersion", "")).split("/")[0]
    if group == GROUP and controller.get("kind") == TSS_KIND:
        return str(controller.get("name"))
    return None


def ownership(existing: Mapping[str, Any], source: SubscriptionSource) -> Literal["ours", "foreign"]:
    """Whether an existing Subscription of the same name may be overwritten for `source`.

    Ours: its controller is a TaskSyncSubscription of this name (the uid may be a previous
    incarnation's, deleted and recreated before the garbage collector caught up), or it has no
    controller but carries our managed-by label (someone stripped the ownerReference by hand).
    Anything else belongs to someone else, and overwriting it would break their subscription.
    """
    meta = existing.get("metadata") or {}
    if _controller(meta) is None:
        return "ours" if (meta.get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY else "foreign"
    return "ours" if owned_by(existing) == source.ref.name else "foreign"


def needs_update(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """True when `existing` differs from `desired` in anything the operator owns."""
    meta = existing.get("metadata") or {}
    desired_meta = desired["metadata"]
    labels_present = desired_meta["labels"].items() <= (meta.get("labels") or {}).items()
    return (
        existing.get("spec") != desired["spec"]
        or (existing.get("scopes") or []) != desired["scopes"]
        or not labels_present
        or _controller(meta) != desired_meta["ownerReferences"][0]
    )


def merged_for_update(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """`desired` laid over `existing` for a PUT.

    Keeps what other tools put in metadata (annotations, extra labels, finalizers, non-controller
    owners) and the resourceVersion, so the write fails with 409 rather than silently overwrite a
    change made since the read.
    """
    merged = copy.deepcopy(dict(existing))
    meta = merged.setdefault("metadata", {})
    meta["labels"] = {**(meta.get("labels") or {}), **desired["metadata"]["labels"]}
    others = [ref for ref in meta.get("ownerReferences") or [] if not ref.get("controller")]
    meta["ownerReferences"] = [*others, *desired["metadata"]["ownerReferences"]]
    merged["spec"] = copy.deepcopy(desired["spec"])
    merged["scopes"] = list(desired["scopes"])
    return merged


def subscription_status(
    existing: Mapping[str, Any], source: SubscriptionSource, *, reason: str, message: str, at: str
) -> dict[str, Any]:
    """The TaskSyncSubscription's status after a reconcile that ended with `reason`."""
    ready = conditions.Condition(
        type=conditions.READY,
        status="True" if reason == REASON_READY else "False",
        reason=reason,
        message=message,
        observed_generation=source.ref.generation,
    )
    return {
        "observedGeneration": source.ref.generation,
        "subscriptionName": source.ref.name,
        "conditions": conditions.with_condition(existing.get("conditions") or [], ready, at=at),
    }
