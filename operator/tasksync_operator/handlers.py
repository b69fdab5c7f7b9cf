"""The kopf handlers: thin and idempotent; the work is in reconcile.py and the pure modules.

TaskSyncSubscription -> Dapr Subscription
    create/update/resume and a periodic resync reconcile one Subscription and report in
    status. A watch on Subscriptions repairs hand edits (and deletions) of the ones the operator
    owns right away. Retriable failures (Dapr not installed, a name conflict, API errors) set
    Ready=False and retry with exponential backoff.

RateLimitPolicy -> limits ConfigMap
    Any change to a policy (including its deletion, hence the finalizer kopf adds) re-renders
    the ConfigMap of its target from every policy of that target. A watch on the operator's
    ConfigMaps repairs hand edits.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any

import kopf
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from tasksync_operator import conditions, kube, model, reconcile, subscriptions
from tasksync_operator.config import OperatorConfig
from tasksync_operator.model import (
    DAPR_GROUP,
    DAPR_PLURAL,
    DAPR_VERSION,
    GROUP,
    LIMITS_TARGET_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    RLP_PLURAL,
    SUBSCRIPTION_SOURCE_LABEL,
    TSS_PLURAL,
    VERSION,
)

# Safety net behind the watches: catches what no event announces, e.g. the Dapr CRDs being
# uninstalled, which should turn Ready false.
RESYNC_INTERVAL_SECONDS = 300.0

# kopf's bookkeeping (handler progress, the last handled spec, the finalizer) goes into
# annotations under our own prefix; the CRDs' status schemas stay strict and kopf-free.
ANNOTATION_PREFIX = "operator.tasksync.io"


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # `tasksync-operator` passes its config; `kopf run -m tasksync_operator.handlers` gets defaults.
    memo.setdefault("config", OperatorConfig())
    settings.persistence.finalizer = f"{ANNOTATION_PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    # Only warnings and errors logged on an object become events (kopf.info() too is
    # filtered); handlers post the Normal events worth a human's attention with kopf.event().
    # Otherwise kopf's per-handler "succeeded" lines would each become an event.
    settings.posting.level = logging.WARNING
    # Only the ConfigMaps the operator writes, filtered by the API server: otherwise kopf would
    # stream every ConfigMap of the watched namespaces and drop the others itself.
    settings.watching.label_selectors["v1", "configmaps"] = f"{MANAGED_BY_LABEL}={MANAGED_BY}"
    memo.api = ApiClient(await kube.load_configuration(memo.config.kubeconfig))
    memo.limits_locks = collections.defaultdict(asyncio.Lock)
    memo.reported_status = {}


@kopf.on.cleanup()
async def close_api(memo: kopf.Memo, **_: Any) -> None:
    await memo.api.close()


@kopf.on.login()
async def login(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
    # Runs after `configure` (kopf authenticates once the startup handlers are done).
    return await kube.connection_info(await kube.load_configuration(memo.config.kubeconfig))


# --- TaskSyncSubscription -> Dapr Subscription -------------------------------------------------


@kopf.index(GROUP, VERSION, TSS_PLURAL)
def subscription_sources(body: kopf.Body, namespace: str, name: str, **_: Any) -> dict[Any, Any]:
    return {(namespace, name): model.subscription_source(body)}


@kopf.timer(
    GROUP, VERSION, TSS_PLURAL, interval=RESYNC_INTERVAL_SECONDS, initial_delay=RESYNC_INTERVAL_SECONDS
)
@kopf.on.resume(GROUP, VERSION, TSS_PLURAL)
@kopf.on.create(GROUP, VERSION, TSS_PLURAL)
@kopf.on.update(GROUP, VERSION, TSS_PLURAL, field="spec")
async def reconcile_subscription(
    body: kopf.Body,
    status: kopf.Status,
    patch: kopf.Patch,
    retry: int,
    memo: kopf.Memo,
    logger: logging.LoggerAdapter,
    **_: Any,
) -> None:
    source = model.subscription_source(body)
    config: OperatorConfig = memo.config

    def report(reason: str, message: str) -> None:
        patch.status.update(
            subscriptions.subscription_status(
                status, source, reason=reason, message=message, at=conditions.now()
            )
        )

    def retry_later(reason: str, message: str) -> kopf.TemporaryError:
        # kopf logs the error, posts it as a Warning event and retries after the delay.
        report(reason, message)
        return kopf.TemporaryError(message, delay=config.retry_delay(retry))

    try:
        outcome = await reconcile.ensure_subscription(memo.api, source)
    except kube.DaprNotInstalled as exc:
        raise retry_later(
            subscriptions.REASON_DAPR_NOT_INSTALLED,
            f"{exc}: install Dapr in the cluster; retrying",
        ) from exc
    except reconcile.SubscriptionConflict as exc:
        raise retry_later(subscriptions.REASON_CONFLICT, str(exc)) from exc
    except ApiException as exc:
        if exc.status == 409:
            # Someone changed the Subscription between our read and write: re-read and redo.
            raise kopf.TemporaryError("Subscription changed concurrently", delay=1) from exc
        raise retry_later(
            subscriptions.REASON_API_ERROR, f"Kubernetes API: {exc.status} {exc.reason}"
        ) from exc

    report(subscriptions.REASON_READY, f"Dapr Subscription {source.ref.name} is up to date")
    if outcome != "unchanged":
        logger.info("Dapr Subscription %s", outcome, extra={"subscription": source.ref.name})
        kopf.event(
            body,
            type="Normal",
            reason=f"Subscription{outcome.capitalize()}",
            message=f"Dapr Subscription {source.ref.name} {outcome}",
        )


@kopf.on.event(DAPR_GROUP, DAPR_VERSION, DAPR_PLURAL)
async def repair_subscription(
    body: kopf.Body,
    namespace: str,
    memo: kopf.Memo,
    logger: logging.LoggerAdapter,
    subscription_sources: kopf.Index,
    **_: Any,
) -> None:
    """Undo hand edits and deletions of the Subscriptions the operator owns, as they happen."""
    source_name = subscriptions.owned_by(body) or body.metadata.labels.get(SUBSCRIPTION_SOURCE_LABEL)
    if source_name is None:
        return
    for source in subscription_sources.get((namespace, source_name), []):
        if source.deleting:
            continue
        try:
            outcome = await reconcile.ensure_subscription(memo.api, source)
        except (kube.DaprNotInstalled, reconcile.SubscriptionConflict, ApiException) as exc:
            # The TaskSyncSubscription's own handlers retry and report this in its status.
            logger.warning(
                "could not repair the Dapr Subscription: %s", exc, extra={"subscription": source.ref.name}
            )
            continue
        if outcome != "unchanged":
            logger.info("Dapr Subscription repaired", extra={"subscription": source.ref.name})
            kopf.event(
                source.ref.as_body(),
                type="Normal",
                reason="DriftRepaired",
                message=f"Dapr Subscription {source.ref.name} was changed by hand; {outcome} again",
            )


# --- RateLimitPolicy -> limits ConfigMap ---------------------------------------------------------


@kopf.index(GROUP, VERSION, RLP_PLURAL)
def policy_sources(body: kopf.Body, namespace: str, **_: Any) -> dict[Any, Any]:
    source = model.policy_source(body)
    return {(namespace, source.spec.target): source}


async def _reconcile_target(
    namespace: str, target: str, memo: kopf.Memo, logger: logging.LoggerAdapter, policy_sources: kopf.Index
) -> None:
    try:
        await reconcile.reconcile_limits(
            api=memo.api,
            namespace=namespace,
            target=target,
            policies=policy_sources.get((namespace, target), []),
            locks=memo.limits_locks,
            reported=memo.reported_status,
            logger=logger,
        )
    except ApiException as exc:
        if exc.status == 409:
            # The ConfigMap changed between our read and write: re-read and redo.
            raise kopf.TemporaryError("limits ConfigMap changed concurrently", delay=1) from exc
        raise


@kopf.on.resume(GROUP, VERSION, RLP_PLURAL)
@kopf.on.create(GROUP, VERSION, RLP_PLURAL)
@kopf.on.update(GROUP, VERSION, RLP_PLURAL, field="spec")
async def reconcile_policy(
    spec: kopf.Spec,
    namespace: str,
    memo: kopf.Memo,
    logger: logging.LoggerAdapter,
    policy_sources: kopf.Index,
    **_: Any,
) -> None:
    await _reconcile_target(namespace, spec["target"], memo, logger, policy_sources)


@kopf.on.delete(GROUP, VERSION, RLP_PLURAL)
async def release_policy(
    spec: kopf.Spec,
    namespace: str,
    memo: kopf.Memo,
    logger: logging.LoggerAdapter,
    policy_sources: kopf.Index,
    **_: Any,
) -> None:
    """Re-render without the deleted policy (the index marks it as deleting)."""
    await _reconcile_target(namespace, spec["target"], memo, logger, policy_sources)


@kopf.on.event("v1", "configmaps", labels={MANAGED_BY_LABEL: MANAGED_BY, LIMITS_TARGET_LABEL: kopf.PRESENT})
async def repair_limits(
    body: kopf.Body,
    namespace: str,
    memo: kopf.Memo,
    logger: logging.LoggerAdapter,
    policy_sources: kopf.Index,
    **_: Any,
) -> None:
    """Undo hand edits and deletions of the limits ConfigMaps."""
    target = body.metadata.labels[LIMITS_TARGET_LABEL]
    await _reconcile_target(namespace, target, memo, logger, policy_sources)
