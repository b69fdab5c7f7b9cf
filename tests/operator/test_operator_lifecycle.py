"""The operator as a cluster runs it: uninstalled before its objects, facing a Dapr CRD that
discovery has not caught up with yet, and as two replicas of which one may die at any time.

Each test runs `tasksync-operator` processes of its own (fixture `operator_process`) on a
namespace of its own, against the real API server.
"""

from __future__ import annotations

import asyncio
import secrets
import time

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from tasksync_operator.model import DAPR_GROUP, DAPR_PLURAL, DAPR_VERSION, GROUP, TSS_PLURAL, VERSION
from tests.operator.api_proxy import DiscoveryProxy
from tests.operator.operator_testkit import (
    DAPR_CRD,
    LEASE_NAME,
    LEASE_NAMESPACE,
    OPERATOR_USER,
    apply_crd,
    create_tss,
    eventually,
    load_yaml,
    read_subscription,
    read_tss,
    remove_dapr_crd,
    tss,
    wait_ready,
)

# Short lease timings so that a takeover is seconds; the chart's defaults are 15/10/2.
ELECTION = (
    f"--leader-elect-resource-name={LEASE_NAME}",
    f"--leader-elect-resource-namespace={LEASE_NAMESPACE}",
    "--leader-elect-lease-duration=6",
    "--leader-elect-renew-deadline=4",
    "--leader-elect-retry-period=1",
)


async def fresh_namespace(kube: client.ApiClient, prefix: str) -> str:
    name = f"{prefix}-{secrets.token_hex(4)}"
    await client.CoreV1Api(kube).create_namespace({"metadata": {"name": name}})
    return name


async def lease_holder(kube: client.ApiClient) -> str | None:
    lease = await client.CoordinationV1Api(kube).read_namespaced_lease(LEASE_NAME, LEASE_NAMESPACE)
    return lease.spec.holder_identity


async def test_deleting_a_subscription_needs_no_running_operator(kube, dapr_crd, operator_process):
    """`helm uninstall` removes the operator and its RBAC before the custom resources: nothing may
    be left that only the operator could remove (a finalizer), or the object, and with it the
    namespace, stays Terminating for ever."""
    namespace = await fresh_namespace(kube, "uninstall")
    operator = operator_process(namespace, "--resync-interval=1")
    await operator.wait_live()
    await create_tss(kube, namespace, tss("release"))
    await wait_ready(kube, namespace, "release")

    async def resynced() -> None:
        # The periodic resync has been over it at least once.
        messages = [line.get("message", "") for line in operator.log_lines()]
        assert any(message.startswith("resync:") for message in messages), messages[-5:]

    await eventually(resynced, timeout=60)
    assert not (await read_tss(kube, namespace, "release"))["metadata"].get("finalizers")

    assert await operator.stop() == 0
    await client.CustomObjectsApi(kube).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, TSS_PLURAL, "release"
    )

    async def gone() -> None:
        try:
            obj = await read_tss(kube, namespace, "release")
        except ApiException as exc:
            if exc.status != 404:
                raise AssertionError(exc) from exc
            return
        raise AssertionError(f"still there: finalizers {obj['metadata'].get('finalizers')}")

    await eventually(gone, timeout=30)


async def hand_edit_topic(kube: client.ApiClient, namespace: str, name: str, topic: str) -> None:
    await client.CustomObjectsApi(kube).patch_namespaced_custom_object(
        DAPR_GROUP,
        DAPR_VERSION,
        namespace,
        DAPR_PLURAL,
        name,
        {"spec": {"topic": topic}},
        _content_type="application/merge-patch+json",
    )


async def topic_of(kube: client.ApiClient, namespace: str, name: str) -> str:
    return (await read_subscription(kube, namespace, name))["spec"]["topic"]


async def test_drift_repair_starts_although_discovery_lags_the_crd(cluster, kube, operator_process):
    """The Dapr CRD is Established, every event about it has been seen, and only then does
    discovery serve its API (the proxy holds discovery back as long as the test needs): no later
    event announces it, and drift repair must start anyway."""
    await remove_dapr_crd(kube)
    namespace = await fresh_namespace(kube, "lag")
    async with DiscoveryProxy(cluster.server, cluster.ca_path) as proxy:
        proxy.hidden.add(DAPR_GROUP)
        operator = operator_process(namespace, kubeconfig=cluster.kubeconfig(OPERATOR_USER, server=proxy.url))
        await operator.wait_live()

        installed_at = time.monotonic()
        await apply_crd(kube, load_yaml(DAPR_CRD))
        await create_tss(kube, namespace, tss("lagging", topic="kept"))
        await wait_ready(kube, namespace, "lagging", status="False", reason="DaprNotInstalled")

        # Discovery was asked after the CRD's events (the operator re-scanned the group for them)
        # and the operator's own checks were refused twice more after that: by then every
        # re-scan the CRD's events triggered is over.
        group_version = f"/apis/{DAPR_GROUP}/{DAPR_VERSION}"

        async def rescanned_while_hidden() -> None:
            rescans = [at for at, path in proxy.hiding_answers if at >= installed_at and path == "/apis"]
            assert rescans, proxy.hiding_answers
            assert proxy.answers_since(rescans[0], group_version) >= 2, proxy.hiding_answers

        await eventually(rescanned_while_hidden, timeout=60)

        proxy.hidden.clear()  # discovery catches up; no event says so
        await wait_ready(kube, namespace, "lagging", reason="SubscriptionReady", timeout=60)
        assert await topic_of(kube, namespace, "lagging") == "kept"

        await hand_edit_topic(kube, namespace, "lagging", "hijacked")

        async def repaired() -> None:
            assert await topic_of(kube, namespace, "lagging") == "kept"

        await eventually(repaired, timeout=60)
        await operator.stop()


async def test_standby_takes_over_when_the_leader_is_killed(kube, dapr_crd, operator_process):
    namespace = await fresh_namespace(kube, "ha")
    first = operator_process(namespace, *ELECTION)
    await first.wait_live()
    await create_tss(kube, namespace, tss("first"))
    await wait_ready(kube, namespace, "first")
    leader = await lease_holder(kube)
    assert leader

    second = operator_process(namespace, *ELECTION)
    await second.wait_live()
    await create_tss(kube, namespace, tss("while-both-run"))
    await wait_ready(kube, namespace, "while-both-run")
    assert await lease_holder(kube) == leader
    assert first.handled("while-both-run")
    assert not second.handled("while-both-run"), "the standby handled an object while the leader ran"

    first.kill()
    killed_at = time.monotonic()
    await create_tss(kube, namespace, tss("after-the-kill"))
    successor = await eventually(lambda: taken_over(kube, leader), timeout=90)
    taken_at = time.monotonic()
    await wait_ready(kube, namespace, "after-the-kill", timeout=90)
    assert second.handled("after-the-kill")
    assert await lease_holder(kube) == successor
    print(
        f"after SIGKILL: Lease taken over in {taken_at - killed_at:.1f}s, "
        f"new object reconciled in {time.monotonic() - killed_at:.1f}s"
    )


async def taken_over(kube: client.ApiClient, leader: str | None) -> str:
    holder = await lease_holder(kube)
    assert holder not in (None, leader), holder
    return holder


async def test_a_stopping_leader_hands_the_lease_over(kube, dapr_crd, operator_process):
    """A rolling update stops the leader with SIGTERM: it releases the lease on its way out, so
    the standby need not wait for the lease to expire."""
    namespace = await fresh_namespace(kube, "handover")
    first = operator_process(namespace, *ELECTION)
    await first.wait_live()
    await create_tss(kube, namespace, tss("first"))
    await wait_ready(kube, namespace, "first")
    leader = await lease_holder(kube)
    second = operator_process(namespace, *ELECTION)
    await second.wait_live()

    stopped_at = time.monotonic()
    assert await first.stop() == 0
    exited_at = time.monotonic()
    assert await lease_holder(kube) != leader, "the lease still names the stopped leader"

    await create_tss(kube, namespace, tss("after-the-stop"))
    await eventually(lambda: taken_over(kube, leader), timeout=90)
    taken_at = time.monotonic()
    await wait_ready(kube, namespace, "after-the-stop", timeout=90)
    assert second.handled("after-the-stop")
    print(
        f"after SIGTERM: leader exited in {exited_at - stopped_at:.1f}s, Lease taken over "
        f"{taken_at - exited_at:.1f}s later, new object reconciled in {time.monotonic() - stopped_at:.1f}s"
    )


async def test_a_leader_that_loses_the_lease_stops_working(kube, dapr_crd, operator_process):
    """Another replica holds the Lease now (here: written by hand, as after a network partition
    long enough for the Lease to expire): the old leader must stop before it races the new one."""
    namespace = await fresh_namespace(kube, "deposed")
    leader = operator_process(namespace, *ELECTION)
    await leader.wait_live()
    await create_tss(kube, namespace, tss("first"))
    await wait_ready(kube, namespace, "first")

    leases = client.CoordinationV1Api(kube)
    lease = await leases.read_namespaced_lease(LEASE_NAME, LEASE_NAMESPACE)
    lease.spec.holder_identity = "another-replica"
    await leases.replace_namespaced_lease(LEASE_NAME, LEASE_NAMESPACE, lease)

    assert await asyncio.to_thread(leader.running.wait, 60) == 1
    messages = [line.get("message", "") for line in leader.log_lines()]
    assert any(message.startswith("stopped leading") for message in messages), messages[-10:]
    assert await lease_holder(kube) == "another-replica", "the deposed leader released someone else's Lease"
