"""The Dapr Subscriptions between kopf's handler runs: drift repaired as it happens, and a
periodic resync of every TaskSyncSubscription.

kopf calls the handlers when a TaskSyncSubscription changes. Keeping its Dapr Subscription
right in between is this module's job, with a watch of its own rather than a kopf handler: kopf
starts watching a resource only when an event about its CRD makes it ask discovery again, and
discovery serves a new CRD's API a little after the CRD's last event (its Established
condition). Losing that race, kopf never watches Dapr's Subscriptions. Here the operator asks
discovery itself, every `dapr_poll_interval` until the API is served, and notices it going away.

- When the Dapr Subscription API appears or disappears, and every `resync_interval`, every
  TaskSyncSubscription is reconciled and its status reported: Subscriptions are created once
  Dapr is installed, Ready turns False when it is uninstalled.
- In between, a watch on the Subscriptions the operator manages puts each hand edit or deletion
  right at once, with a `DriftRepaired` event.
- The same resync gives each limits ConfigMap its target's Deployment as owner when the
  Deployment was created after the ConfigMap (reconcile.adopt_limits): no event announces that.

None of this puts a finalizer on anything (unlike a kopf timer or daemon, which would): deleting
a TaskSyncSubscription never needs the operator.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from typing import Any, NoReturn

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.watch import Watch

from tasksync_operator import conditions, kube, reconcile, subscriptions
from tasksync_operator.model import (
    DAPR_GROUP,
    DAPR_PLURAL,
    DAPR_VERSION,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    SUBSCRIPTION_SOURCE_LABEL,
    TSS_PLURAL,
    PolicySource,
    SubscriptionSource,
)

logger = logging.getLogger(__name__)

# What a failed call to the API server can raise; the loop logs it and tries again.
API_ERRORS = (ApiException, aiohttp.ClientError, TimeoutError)

# kopf's namespace patterns: globs, negations ("!name") and comma-separated lists.
NAMESPACE_PATTERN = re.compile(r"[*?\[!,]")

SourceIndex = Mapping[tuple[str, str], Iterable[SubscriptionSource]]
PolicyIndex = Mapping[tuple[str, str], Iterable[PolicySource]]


def watch_scopes(namespaces: Sequence[str]) -> Sequence[str | None]:
    """Where to list and watch Subscriptions (None: cluster-wide).

    One request per namespace the operator was given by name, since its Roles there grant
    nothing more; cluster-wide for all namespaces or any pattern, which come with cluster-wide
    rules. Namespaces outside the operator's are filtered out by the index either way.
    """
    if not namespaces or any(NAMESPACE_PATTERN.search(namespace) for namespace in namespaces):
        return [None]
    return sorted(set(namespaces))


def source_name(subscription: Mapping[str, Any]) -> str | None:
    """The TaskSyncSubscription a Subscription is rendered from, by owner, else by label."""
    labels = (subscription.get("metadata") or {}).get("labels") or {}
    return subscriptions.owned_by(subscription) or labels.get(SUBSCRIPTION_SOURCE_LABEL)


class DriftGuard:
    def __init__(
        self,
        *,
        api: client.ApiClient,
        sources: SourceIndex,
        policies: PolicyIndex,
        limits_locks: MutableMapping[tuple[str, str], asyncio.Lock],
        namespaces: Sequence[str],
        resync_interval: float,
        poll_interval: float,
    ) -> None:
        self.api = api
        self.sources = sources
        self.policies = policies
        self.limits_locks = limits_locks
        self.scopes = watch_scopes(namespaces)
        self.resync_interval = resync_interval
        self.poll_interval = poll_interval

    async def run(self) -> NoReturn:
        loop = asyncio.get_running_loop()
        served: bool | None = None
        next_resync = loop.time()
        while True:
            try:
                now_served = await kube.subscriptions_served(self.api)
            except API_ERRORS as exc:
                logger.warning("cannot ask discovery for the Dapr Subscription API: %s", exc)
                await asyncio.sleep(self.poll_interval)
                continue
            if now_served != served or loop.time() >= next_resync:
                served = now_served
                await self.resync()
                next_resync = loop.time() + self.resync_interval
            if served:
                await self.watch(until=next_resync)
            else:
                await asyncio.sleep(min(self.poll_interval, max(0.0, next_resync - loop.time())))

    def _known_sources(self) -> list[SubscriptionSource]:
        # A snapshot: kopf updates the index while this awaits.
        return [
            source
            for key in list(self.sources)
            for source in self.sources.get(key, ())
            if not source.deleting
        ]

    async def resync(self) -> None:
        sources = self._known_sources()
        written = 0
        for source in sources:
            written += await self.reconcile(source)
        adopted = 0
        for namespace, target in list(self.policies):  # a snapshot, as above
            try:
                adopted += await reconcile.adopt_limits(
                    api=self.api, namespace=namespace, target=target, locks=self.limits_locks, logger=logger
                )
            except API_ERRORS as exc:
                # A 409 too: whoever wrote the ConfigMap caused an event that reconciles it.
                logger.warning("cannot give the limits ConfigMap of %s/%s its owner: %s", namespace, target, exc)
        logger.info(
            "resync: %d TaskSyncSubscriptions checked, %d Subscriptions written, "
            "%d limits ConfigMaps handed to their Deployment",
            len(sources),
            written,
            adopted,
            extra={"checked": len(sources), "written": written, "adopted": adopted},
        )

    async def reconcile(self, source: SubscriptionSource, *, drifted: bool = False) -> bool:
        """Reconcile one source and report its status; True if its Subscription was written.

        `drifted`: someone just changed or deleted the Subscription, so writing it is a repair.
        Otherwise (a resync) a Subscription that has to be created is simply created: typically
        Dapr has just been installed.
        """
        try:
            outcome = await reconcile.sync_subscription(self.api, source)
        except (aiohttp.ClientError, TimeoutError) as exc:
            # The API server is out of reach; the next event or resync tries again.
            logger.warning("cannot reconcile %s/%s: %s", source.ref.namespace, source.ref.name, exc)
            return False
        if outcome.concurrent:
            return False  # whoever changed it caused an event, which brings us back
        status = subscriptions.subscription_status(
            source.status, source, reason=outcome.reason, message=outcome.message, at=conditions.now()
        )
        if any(source.status.get(key) != value for key, value in status.items()):
            try:
                await kube.patch_status(self.api, TSS_PLURAL, source.ref.namespace, source.ref.name, status)
            except API_ERRORS as exc:
                logger.warning(
                    "cannot report the status of %s/%s: %s", source.ref.namespace, source.ref.name, exc
                )
        if outcome.change not in ("created", "updated"):
            return False
        name = source.ref.name
        if drifted or outcome.change == "updated":
            reason = "DriftRepaired"
            message = f"Dapr Subscription {name} was changed by hand; {outcome.change} again"
        else:
            reason, message = "SubscriptionCreated", f"Dapr Subscription {name} created"
        logger.info(message, extra={"namespace": source.ref.namespace, "subscription": name})
        try:
            await kube.post_event(self.api, source.ref, type="Normal", reason=reason, message=message)
        except API_ERRORS as exc:
            logger.warning("cannot post the %s event: %s", reason, exc)
        return True

    async def repair(self, subscription: Mapping[str, Any]) -> None:
        """Reconcile the source of a Subscription someone (maybe us) just changed or deleted."""
        name = source_name(subscription)
        namespace = (subscription.get("metadata") or {}).get("namespace")
        if name is None or namespace is None:
            return
        for source in self.sources.get((namespace, name), ()):
            if not source.deleting:
                await self.reconcile(source, drifted=True)

    async def watch(self, *, until: float) -> None:
        """Repair as Subscriptions change, until `until` or until a watch ends early (the API
        went away, the server closed it): the caller then checks discovery and starts again."""
        watches = [asyncio.create_task(self._watch_scope(scope, until)) for scope in self.scopes]
        try:
            await asyncio.wait(watches, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in watches:
                task.cancel()
            await asyncio.gather(*watches, return_exceptions=True)

    async def _watch_scope(self, namespace: str | None, until: float) -> None:
        custom = client.CustomObjectsApi(self.api)
        if namespace is None:
            list_subscriptions = functools.partial(
                custom.list_cluster_custom_object, DAPR_GROUP, DAPR_VERSION, DAPR_PLURAL
            )
        else:
            list_subscriptions = functools.partial(
                custom.list_namespaced_custom_object, DAPR_GROUP, DAPR_VERSION, namespace, DAPR_PLURAL
            )
        managed = f"{MANAGED_BY_LABEL}={MANAGED_BY}"
        loop = asyncio.get_running_loop()
        try:
            listing = await list_subscriptions(label_selector=managed)
            for item in listing["items"]:
                await self.repair(item)
            seconds = int(until - loop.time())
            if seconds < 1:
                return
            # Label-selected: an object whose label is removed arrives as DELETED, in its last
            # matching state, which still names its source.
            async with Watch() as watch:
                async for event in watch.stream(
                    list_subscriptions,
                    label_selector=managed,
                    resource_version=listing["metadata"]["resourceVersion"],
                    timeout_seconds=seconds,
                ):
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        await self.repair(event["raw_object"])
        except ApiException as exc:
            if exc.status == 410:
                return  # our resourceVersion is too old: list again
            if exc.status != 404:  # 404: the API is gone; discovery will say so
                logger.warning("cannot watch Dapr Subscriptions: %s %s", exc.status, exc.reason)
            await asyncio.sleep(self.poll_interval)
        except (aiohttp.ClientError, TimeoutError) as exc:
            logger.warning("cannot watch Dapr Subscriptions: %s", exc)
            await asyncio.sleep(self.poll_interval)
