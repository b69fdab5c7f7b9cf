"""Leader election over a coordination.k8s.io Lease: of the operator's replicas, one works.

Two replicas handling the same objects would race on every write and post every event twice;
one replica leaves nobody to take over when its node dies. So each replica first competes for
one Lease; the holder runs kopf, the others stand by and run nothing.

- The leader renews the Lease every retry period. If it cannot renew it for the renew deadline
  (shorter than the lease duration), it has lost the Lease and must stop working before a
  standby may take it: the caller stops kopf and exits, and the restarted process queues again.
- A standby takes the Lease once its holder has not renewed it for the lease duration, counted
  on the standby's own clock from when it last saw the Lease change, so clock skew between
  nodes does not matter.
- A leader that stops normally (SIGTERM: a rolling update, a drain) releases the Lease on its
  way out, and a standby takes over at its next retry instead of after the lease duration.

The fields mean what they mean for client-go's leader election, so `kubectl get lease` reads as
for any controller.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import math
import secrets
import socket
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp
import msgspec
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

logger = logging.getLogger(__name__)

# What a failed call to the API server can raise: for the Lease, a failed attempt, retried.
API_ERRORS = (ApiException, aiohttp.ClientError, TimeoutError)


def default_identity() -> str:
    # The hostname is the pod's name; the suffix tells a restarted container from its
    # predecessor, which must not mistake the predecessor's Lease for its own.
    return f"{socket.gethostname()}_{secrets.token_hex(4)}"


class ElectionSettings(msgspec.Struct, frozen=True, kw_only=True):
    lease_name: str
    lease_namespace: str
    identity: str = msgspec.field(default_factory=default_identity)
    lease_duration: float = 15.0
    """How long a standby waits for a silent leader before taking over."""
    renew_deadline: float = 10.0
    """How long the leader keeps trying to renew before it gives up leading."""
    retry_period: float = 2.0
    """How often the leader renews and a standby checks the Lease."""

    def __post_init__(self) -> None:
        if not self.lease_duration > self.renew_deadline > self.retry_period > 0:
            raise ValueError(
                "leader election needs lease duration > renew deadline > retry period > 0, got "
                f"{self.lease_duration} > {self.renew_deadline} > {self.retry_period}"
            )


class LeaseLost(Exception):
    """The leader could not renew its Lease in time; another replica may be leading now."""


def _micro_time(moment: datetime.datetime) -> str:
    """metav1.MicroTime, the format of a Lease's times."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseElector:
    def __init__(self, api: client.ApiClient, settings: ElectionSettings) -> None:
        self.settings = settings
        self._leases = client.CoordinationV1Api(api)
        self._observed_version: str | None = None
        self._observed_at = 0.0
        self.holder: str | None = None
        """The holder the Lease named when last read (None: nobody)."""

    @property
    def leading(self) -> bool:
        return self.holder == self.settings.identity

    async def acquire(self, *, until: asyncio.Event) -> bool:
        """Stand by until this process holds the Lease (True), or `until` is set (False)."""
        reported: str | None = None
        while not until.is_set():
            if await self._attempt():
                logger.info(
                    "leading: holds Lease %s/%s as %s",
                    self.settings.lease_namespace,
                    self.settings.lease_name,
                    self.settings.identity,
                )
                return True
            if self.holder != reported:
                reported = self.holder
                logger.info("standing by: Lease %s is held by %s", self.settings.lease_name, reported)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(until.wait(), self.settings.retry_period)
        return False

    async def lead(self, work: Callable[[], Coroutine[Any, Any, None]], *, until: asyncio.Event) -> None:
        """Run `work()` while renewing the Lease; release the Lease when it ends.

        `work` ends on its own (kopf stops gracefully on SIGTERM), or is cancelled when `until`
        is set or the Lease is lost, which then raises LeaseLost. Cancelled rather than asked
        to stop: a lost Lease may be taken over by another replica any moment.
        """
        # Created before `work` starts: kopf cancels the tasks it finds were created after it.
        renewing = asyncio.create_task(self._renew_until_lost(), name="lease renewal")
        stopping = asyncio.create_task(until.wait(), name="stop request")
        working = asyncio.create_task(work(), name="operator")
        try:
            await asyncio.wait({renewing, stopping, working}, return_when=asyncio.FIRST_COMPLETED)
            if working.done():
                await working
            elif renewing.done():
                raise LeaseLost(
                    f"could not renew Lease {self.settings.lease_name} for "
                    f"{self.settings.renew_deadline}s"
                )
        finally:
            for task in (renewing, stopping, working):
                task.cancel()
            await asyncio.gather(renewing, stopping, working, return_exceptions=True)
            await self.release()

    async def _renew_until_lost(self) -> None:
        loop = asyncio.get_running_loop()
        renewed_at = loop.time()
        while True:
            await asyncio.sleep(self.settings.retry_period)
            left = renewed_at + self.settings.renew_deadline - loop.time()
            try:
                renewed = await asyncio.wait_for(self._attempt(), max(left, 0.0))
            except TimeoutError:
                renewed = False
            if renewed:
                renewed_at = loop.time()
            elif self.holder not in (None, self.settings.identity):
                logger.error("Lease %s was taken by %s", self.settings.lease_name, self.holder)
                return
            elif loop.time() - renewed_at >= self.settings.renew_deadline:
                logger.error("could not renew Lease %s in time", self.settings.lease_name)
                return

    async def release(self) -> None:
        """Hand the Lease back if this process holds it (best effort: else it expires)."""
        if not self.leading:
            return
        try:
            lease = await self._leases.read_namespaced_lease(
                self.settings.lease_name, self.settings.lease_namespace
            )
            if (lease.spec.holder_identity if lease.spec else None) != self.settings.identity:
                return
            now = datetime.datetime.now(datetime.UTC)
            spec = {
                # client-go's release: nobody holds it, and it expires in a second anyway.
                "holderIdentity": None,
                "leaseDurationSeconds": 1,
                "acquireTime": _micro_time(now),
                "renewTime": _micro_time(now),
                "leaseTransitions": lease.spec.lease_transitions or 0,
            }
            await self._leases.replace_namespaced_lease(
                self.settings.lease_name,
                self.settings.lease_namespace,
                self._body(spec, resource_version=lease.metadata.resource_version),  # type: ignore[arg-type]
            )
            self.holder = None
            logger.info("released Lease %s", self.settings.lease_name)
        except API_ERRORS as exc:
            logger.warning("could not release Lease %s: %s", self.settings.lease_name, exc)

    async def _attempt(self) -> bool:
        """Take or renew the Lease once; False if someone else holds it or the write lost a race."""
        try:
            return await self._take_or_renew()
        except API_ERRORS as exc:
            logger.warning("Lease %s: %s", self.settings.lease_name, exc)
            return False

    async def _take_or_renew(self) -> bool:
        settings = self.settings
        loop = asyncio.get_running_loop()
        now = datetime.datetime.now(datetime.UTC)
        try:
            lease = await self._leases.read_namespaced_lease(settings.lease_name, settings.lease_namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            spec = self._spec(acquired=now, renewed=now, transitions=0)
            try:
                await self._leases.create_namespaced_lease(
                    settings.lease_namespace,
                    self._body(spec),  # type: ignore[arg-type]
                )
            except ApiException as create_error:
                if create_error.status == 409:
                    return False  # another replica created it first
                raise
            self.holder = settings.identity
            return True

        current = lease.spec or client.V1LeaseSpec()
        self.holder = current.holder_identity or None
        if lease.metadata.resource_version != self._observed_version:
            self._observed_version = lease.metadata.resource_version
            self._observed_at = loop.time()
        duration = current.lease_duration_seconds or settings.lease_duration
        if self.holder not in (None, settings.identity) and loop.time() < self._observed_at + duration:
            return False
        ours = self.holder == settings.identity
        spec = self._spec(
            acquired=current.acquire_time if ours and current.acquire_time else now,
            renewed=now,
            transitions=(current.lease_transitions or 0) + (0 if ours else 1),
        )
        try:
            await self._leases.replace_namespaced_lease(
                settings.lease_name,
                settings.lease_namespace,
                self._body(spec, resource_version=lease.metadata.resource_version),  # type: ignore[arg-type]
            )
        except ApiException as exc:
            if exc.status == 409:
                return False  # changed since our read: another replica renewed or took it
            raise
        self.holder = settings.identity
        return True

    def _spec(
        self, *, acquired: datetime.datetime, renewed: datetime.datetime, transitions: int
    ) -> dict[str, Any]:
        return {
            "holderIdentity": self.settings.identity,
            "leaseDurationSeconds": math.ceil(self.settings.lease_duration),
            "acquireTime": _micro_time(acquired),
            "renewTime": _micro_time(renewed),
            "leaseTransitions": transitions,
        }

    def _body(self, spec: dict[str, Any], *, resource_version: str | None = None) -> dict[str, Any]:
        """The Lease as a plain dict, which the client sends as it is, although its stubs want a
        V1Lease: that model would write the times without the six-digit fraction MicroTime needs
        whenever the microseconds are 0."""
        metadata: dict[str, Any] = {"name": self.settings.lease_name, "namespace": self.settings.lease_namespace}
        if resource_version is not None:
            metadata["resourceVersion"] = resource_version
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec}
