"""The kopf handlers: thin and idempotent; the work is in reconcile.py and the pure modules.

TaskSyncSubscription -> Dapr Subscription
    create/update/resume reconcile one Subscription and report in status. Retriable failures
    (Dapr not installed, a name conflict, API errors) set Ready=False and retry with exponential
    backoff. Drift repair and the periodic resync run in drift.DriftGuard, a task of the
    operator's own: no kopf timer, whose finalizer would keep a TaskSyncSubscription from being
    deleted whenever the operator is not running (as after `helm uninstall`).

RateLimitPolicy -> limits ConfigMap
    Any change to a policy (including its deletion, hence the finalizer kopf adds) re-renders
    the ConfigMap of its target from every policy of that target. A watch on the operator's
    ConfigMaps repairs hand edits.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from typing import Any

import kopf
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from tasksync_operator import conditions, drift, kube, model, reconcile, subscriptions
from tasksync_operator.config import OperatorConfig
from tasksync_operator.model import (
    GROUP,
    LIMITS_TARGET_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    RLP_PLURAL,
    TSS_PLURAL,
    VERSION,
)

# kopf passes each index to the handlers as a keyword argument named after it, which kopf's handler
# protocols do not declare: the handlers taking one carry a `type: ignore[arg-type]`, as in kopf's
# own examples.

# kopf's bookkeeping (handler progress, the last handled spec, the finalizer) goes into
# annotations under our own prefix; the CRDs' status schemas stay strict and kopf-free.
ANNOTATION_PREFIX = "operator.tasksync.io"


@kopf.on.startup()  # type: ignore[arg-type]
async def configure(
    settings: kopf.OperatorSettings,
    memo: kopf.Memo,
    subscription_sources: kopf.Index,
    policy_sources: kopf.Index,
    **_: Any,
) -> None:
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
    # The index is live: kopf fills it as it lists and watches TaskSyncSubscriptions.
    config: OperatorConfig = memo.config
    guard = drift.DriftGuard(
        api=memo.api,
        sources=subscription_sources,
        policies=policy_sources,
        limits_locks=memo.limits_locks,
        namespaces=config.namespaces,
        resync_interval=config.resync_interval,
        poll_interval=config.dapr_poll_interval,
    )
    memo.drift_guard = asyncio.create_task(guard.run(), name="drift guard")


@kopf.on.probe(id="drift_guard")
def drift_guard_alive(memo: kopf.Memo, **_: Any) -> str:
    """Fail the liveness probe if drift repair has stopped, so that the pod is restarted."""
    task: asyncio.Task[None] = memo.drift_guard
    if task.done():
        reason = "cancelled" if task.cancelled() else repr(task.exception())
        raise RuntimeError(f"drift repair stopped: {reason}")
    return "running"


@kopf.on.cleanup()
async def close_api(memo: kopf.Memo, **_: Any) -> None:
    memo.drift_guard.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await memo.drift_guard
    await memo.api.close()


@kopf.on.login()
async def login(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
    # Runs after `configure` (kopf authenticates once the startup handlers are done).
    return await kube.connection_info(await kube.load_configuration(memo.config.kubeconfig))


# --- TaskSyncSubscription -> Dapr Subscription -------------------------------------------------


@kopf.index(GROUP, VERSION, TSS_PLURAL)
def subscription_sources(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> dict[Any, Any]:
    return {(namespace, name): model.subscription_source(body)}


@kopf.on.resume(GROUP, VERSION, TSS_PLURAL)
@kopf.on.create(GROUP, VERSION, TSS_PLURAL)
@kopf.on.update(GROUP, VERSION, TSS_PLURAL, field="spec")
async def reconcile_subscription(
    body: kopf.Body,
    status: kopf.Status,
    patch: kopf.Patch,
    retry: int,
    memo: kopf.Memo,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    source = model.subscription_source(body)
    config: OperatorConfig = memo.config
    outcome = await reconcile.sync_subscription(memo.api, source)
    if outcome.concurrent:
        # Someone changed the Subscription between our read and write: re-read and redo.
        raise kopf.TemporaryError(outcome.message, delay=1)
    patch.status.update(
        subscriptions.subscription_status(
            status, source, reason=outcome.reason, message=outcome.message, at=conditions.now()
        )
    )
    if not outcome.ready:
        # kopf logs the error, posts it as a Warning event and retries after the delay.
        raise kopf.TemporaryError(outcome.message, delay=config.retry_delay(retry))
    if outcome.change in ("created", "updated"):
        logger.info("Dapr Subscription %s", outcome.change, extra={"subscription": source.ref.name})
        kopf.event(
            body,
            type="Normal",
            reason=f"Subscription{outcome.change.capitalize()}",
            message=f"Dapr Subscription {source.ref.name} {outcome.change}",
        )


# --- RateLimitPolicy -> limits ConfigMap ---------------------------------------------------------


@kopf.index(GROUP, VERSION, RLP_PLURAL)
def policy_sources(body: kopf.Body, namespace: str | None, **_: Any) -> dict[Any, Any]:
    source = model.policy_source(body)
    return {(namespace, source.spec.target): source}


async def _reconcile_target(
    namespace: str, target: str, memo: kopf.Memo, logger: kopf.Logger, policy_sources: kopf.Index
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
@kopf.on.update(GROUP, VERSION, RLP_PLURAL, field="spec")  # type: ignore[arg-type]
async def reconcile_policy(
    spec: kopf.Spec,
    namespace: str,
    memo: kopf.Memo,
    logger: kopf.Logger,
    policy_sources: kopf.Index,
    **_: Any,
) -> None:
    await _reconcile_target(namespace, spec["target"], memo, logger, policy_sources)


@kopf.on.delete(GROUP, VERSION, RLP_PLURAL)  # type: ignore[arg-type]
async def release_policy(
    spec: kopf.Spec,
    namespace: str,
    memo: kopf.Memo,
    logger: kopf.Logger,
    policy_sources: kopf.Index,
    **_: Any,
) -> None:
    """Re-render without the deleted policy (the index marks it as deleting)."""
    await _reconcile_target(namespace, spec["target"], memo, logger, policy_sources)


@kopf.on.event(  # type: ignore[arg-type]
    "v1", "configmaps", labels={MANAGED_BY_LABEL: MANAGED_BY, LIMITS_TARGET_LABEL: kopf.PRESENT}
)
async def repair_limits(
    body: kopf.Body,
    namespace: str,
    memo: kopf.Memo,
    logger: kopf.Logger,
    policy_sources: kopf.Index,
    **_: Any,
) -> None:
    """Undo hand edits and deletions of the limits ConfigMaps."""
    target = body.metadata.labels[LIMITS_TARGET_LABEL]
    await _reconcile_target(namespace, target, memo, logger, policy_sources)
