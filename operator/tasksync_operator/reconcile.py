"""Make the cluster match one source: the API side of the handlers, kept out of the kopf module.

Both functions are idempotent: they read what exists, compare it with what the pure
rendering says should exist, and write only the difference. Running them again, from any
handler, at any time, is always safe.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, MutableMapping
from typing import Any, Literal

import kopf
import msgspec
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from tasksync.limits import LimitsFile
from tasksync_operator import conditions, kube, ratelimits, subscriptions
from tasksync_operator.model import RLP_PLURAL, PolicySource, SubscriptionSource

Change = Literal["created", "updated", "unchanged"]


class SubscriptionConflict(Exception):
    """A Subscription of the wanted name exists and belongs to someone else."""


class SubscriptionOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """How reconciling one TaskSyncSubscription went, in the terms of its Ready condition."""

    reason: str
    """One of subscriptions.REASON_*."""
    message: str
    change: Change | None = None
    """What was done to the Subscription; None when it could not be reconciled."""
    concurrent: bool = False
    """The Subscription changed between our read and our write: redo soon, report nothing."""

    @property
    def ready(self) -> bool:
        return self.reason == subscriptions.REASON_READY


async def sync_subscription(api: ApiClient, source: SubscriptionSource) -> SubscriptionOutcome:
    """`ensure_subscription`, with every failure it can meet turned into a Ready reason."""
    try:
        change = await ensure_subscription(api, source)
    except kube.DaprNotInstalled as exc:
        return SubscriptionOutcome(
            reason=subscriptions.REASON_DAPR_NOT_INSTALLED,
            message=f"{exc}: install Dapr in the cluster; retrying",
        )
    except SubscriptionConflict as exc:
        return SubscriptionOutcome(reason=subscriptions.REASON_CONFLICT, message=str(exc))
    except ApiException as exc:
        return SubscriptionOutcome(
            reason=subscriptions.REASON_API_ERROR,
            message=f"Kubernetes API: {exc.status} {exc.reason}",
            concurrent=exc.status == 409,
        )
    return SubscriptionOutcome(
        reason=subscriptions.REASON_READY,
        message=f"Dapr Subscription {source.ref.name} is up to date",
        change=change,
    )


async def ensure_subscription(api: ApiClient, source: SubscriptionSource) -> Change:
    """Create or repair the Dapr Subscription of `source`. Raises DaprNotInstalled, Conflict."""
    desired = subscriptions.render_subscription(source)
    existing = await kube.read_subscription(api, source.ref.namespace, source.ref.name)
    if existing is None:
        await kube.create_subscription(api, desired)
        return "created"
    if subscriptions.ownership(existing, source) == "foreign":
        raise SubscriptionConflict(
            f"Subscription {source.ref.name} already exists and is not managed by this "
            "TaskSyncSubscription; delete or rename one of them"
        )
    if not subscriptions.needs_update(existing, desired):
        return "unchanged"
    await kube.replace_subscription(api, subscriptions.merged_for_update(existing, desired))
    return "updated"


async def reconcile_limits(
    *,
    api: ApiClient,
    namespace: str,
    target: str,
    policies: Iterable[PolicySource],
    locks: MutableMapping[tuple[str, str], asyncio.Lock],
    reported: MutableMapping[str, dict[str, Any]],
    logger: logging.Logger | logging.LoggerAdapter,
) -> None:
    """Render every policy of one target into its ConfigMap and report back on each policy.

    `policies` is everything the operator knows for the target, including policies being
    deleted (they still count for the generation floor, not for the limits). Work on one target
    is serialised: handlers of sibling policies run concurrently and must not race on the file.
    `reported` remembers the status last written to each policy (by uid): the index learns of
    our own status writes only later, and a stale copy must not make us skip a needed write.
    The ConfigMap is owned by the target's Deployment once it exists, even if the limits are
    unchanged (see limits_owner).
    """
    async with locks[(namespace, target)]:
        known = list(policies)
        live = [policy for policy in known if not policy.deleting]
        for policy in known:
            if policy.deleting:
                reported.pop(policy.ref.uid, None)
        name = ratelimits.configmap_name(target)
        configmap = await kube.read_configmap(api, namespace, name)
        try:
            current = ratelimits.read_limits_file(configmap)
        except ValueError as exc:
            # Someone wrote it by hand; the service has refused it and kept its previous limits.
            logger.warning(
                "limits ConfigMap is unreadable and will be replaced",
                extra={"configmap": name, "error": str(exc)},
            )
            current = None

        problem: str | None = None
        in_force = current.generation if current is not None else None
        try:
            new_file = ratelimits.next_limits_file(
                ratelimits.merge_policies(live), current, ratelimits.generation_floor(known)
            )
        except ratelimits.InvalidLimits as exc:
            problem = str(exc)
            new_file = None
            logger.warning(
                "merged limits refused; the ConfigMap keeps the previous generation",
                extra={"target": target, "generation": in_force, "error": problem},
            )
        owner = await limits_owner(api, namespace, target)
        if new_file is not None:
            resource_version = configmap["metadata"]["resourceVersion"] if configmap else None
            await kube.write_configmap(
                api,
                ratelimits.render_configmap(namespace, target, new_file, owner=owner),
                resource_version=resource_version,
            )
            in_force = new_file.generation
            logger.info(
                "limits file written",
                extra={
                    "target": target,
                    "configmap": name,
                    "generation": in_force,
                    "sources": new_file.sources,
                },
            )
        elif configmap is not None and current is not None and ratelimits.lacks_owner(configmap, owner):
            await _hand_over(api, namespace, target, configmap, current, owner, logger)

        at = conditions.now()
        for policy in live:
            last = reported.get(policy.ref.uid, policy.status)
            status = ratelimits.policy_status(
                policy.ref, policy.spec.target, last, target_generation=in_force, problem=problem, at=at
            )
            if all(last.get(key) == value for key, value in status.items()):
                continue
            if not await kube.patch_status(api, RLP_PLURAL, namespace, policy.ref.name, status):
                continue  # deleted since it was indexed
            reported[policy.ref.uid] = status
            if problem is not None:
                kopf.warn(kopf.Body(policy.ref.as_body()), reason=ratelimits.REASON_INVALID, message=problem)
            elif new_file is not None:
                kopf.event(
                    kopf.Body(policy.ref.as_body()),
                    type="Normal",
                    reason=ratelimits.REASON_APPLIED,
                    message=f"limits generation {in_force} written to ConfigMap {name}",
                )


async def limits_owner(api: ApiClient, namespace: str, target: str) -> dict[str, Any] | None:
    """The ownerReference to the target's Deployment, None while there is no such Deployment.

    The chart names the instance's Deployment after the target (its fullname), and mounts
    `<target>-limits`: owned by the Deployment, the ConfigMap goes with it on `helm uninstall`.
    """
    deployment = await kube.read_deployment(api, namespace, target)
    return ratelimits.deployment_owner(deployment) if deployment is not None else None


async def _hand_over(
    api: ApiClient,
    namespace: str,
    target: str,
    configmap: dict[str, Any],
    current: LimitsFile,
    owner: dict[str, Any] | None,
    logger: logging.Logger | logging.LoggerAdapter,
) -> None:
    """Rewrite the file in force unchanged, now owned by the Deployment (created after it)."""
    await kube.write_configmap(
        api,
        ratelimits.render_configmap(namespace, target, current, owner=owner),
        resource_version=configmap["metadata"]["resourceVersion"],
    )
    logger.info(
        "limits ConfigMap handed to its Deployment",
        extra={"target": target, "configmap": configmap["metadata"]["name"], "generation": current.generation},
    )


async def adopt_limits(
    *,
    api: ApiClient,
    namespace: str,
    target: str,
    locks: MutableMapping[tuple[str, str], asyncio.Lock],
    logger: logging.Logger | logging.LoggerAdapter,
) -> bool:
    """Give the limits ConfigMap of `target` its Deployment as owner if it lacks it; True if so.

    The periodic resync's share of the limits: nothing announces a Deployment created after its
    ConfigMap (the operator does not watch Deployments). Only the owner changes; the limits are
    reconciled by the policy and ConfigMap events, and an unreadable file is theirs to replace.
    """
    async with locks[(namespace, target)]:
        configmap = await kube.read_configmap(api, namespace, ratelimits.configmap_name(target))
        try:
            current = ratelimits.read_limits_file(configmap)
        except ValueError:
            return False
        if configmap is None or current is None:
            return False
        owner = await limits_owner(api, namespace, target)
        if not ratelimits.lacks_owner(configmap, owner):
            return False
        await _hand_over(api, namespace, target, configmap, current, owner, logger)
        return True
