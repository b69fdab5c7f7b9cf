"""`helm install` of charts/tasksync on the real test cluster, with the image `make image`
builds, two service replicas on Redis (a pod, from Debian's redis-server) and the operator; then
what a release lives through: traffic through its Service, the operator turning the chart's
TaskSyncSubscription into a Dapr Subscription (Dapr's Subscription CRD installed by the test; no
Dapr runtime), a rollout restart under steady publishing, `helm test`, Prometheus scraping the
pods, the operator's standby taking over when the leader is killed, `helm upgrade`, and
`helm uninstall`.

The tests share one release and run in file order, as its life does; each still checks only
what it names.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tasksync.client import ClientClosed, SyncClient
from tasksync.protocol import ResyncRequired, TaskUpdate
from tests.chart.charttools import (
    CHART,
    DASHBOARD_VARIABLES,
    NAMESPACE,
    RELEASE,
    Helm,
    dashboard_queries,
    ensure_tools,
    grafana_to_promql,
)
from tests.chart.prometheus_server import PrometheusServer
from tests.cluster.kube_api import KubeApi
from tests.cluster.kube_cluster import KubeCluster
from tests.support.jwt_tokens import hs256
from tests.support.publishing import RetryingPublisher
from tests.support.waiting import eventually, wait_until

# Installing, rolling and upgrading on a shared two-core machine takes minutes, not seconds.
pytestmark = pytest.mark.timeout(900)

JWT_SECRET = secrets.token_urlsafe(32)
API_KEY = secrets.token_urlsafe(24)
SERVICE_PORT = 8005
INSTANCE = f"app.kubernetes.io/instance={RELEASE}"
SERVICE_PODS = f"{INSTANCE},app.kubernetes.io/component=server"
FAST_BACKOFF = (0.1, 0.2, 0.4, 0.8)
USERS = [f"user-{n}" for n in range(4)]
REPO = Path(__file__).resolve().parents[2]
DAPR_SUBSCRIPTION_CRD = REPO / "tests" / "operator" / "fixtures" / "dapr-subscription-crd.yaml"
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
TASKSYNC_SUBSCRIPTIONS = f"/apis/tasksync.io/v1alpha1/namespaces/{NAMESPACE}/tasksyncsubscriptions"
DAPR_SUBSCRIPTIONS = f"/apis/dapr.io/v2alpha1/namespaces/{NAMESPACE}/subscriptions"
OPERATOR_PODS = f"{INSTANCE},app.kubernetes.io/component=operator"


def chart_values(image: str) -> dict[str, Any]:
    repository, tag = image.rsplit(":", 1)
    return {
        # Imported into the node, never pulled.
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "replicaCount": 2,
        "broker": {"url": "redis://redis:6379/0"},
        "auth": {"jwt": {"secret": JWT_SECRET}},
        # Dapr's annotations and a declarative subscription, for the operator to turn into a
        # Dapr Subscription; no Dapr runtime injects a sidecar, so events come over HTTP with an
        # API key. The Dapr Component stays off (dapr.component.enabled defaults to false): its
        # CRD is not installed.
        "dapr": {"enabled": True, "subscription": {"mode": "declarative"}},
        "apiKeys": {"keys": [API_KEY]},
        # A short drain keeps each rollout to seconds; the clients still see 1012 and resume.
        "drain": {"windowSeconds": 2, "graceSeconds": 5, "preStopSeconds": 2},
    }


def redis_objects(image: str) -> list[tuple[str, dict[str, Any]]]:
    """Redis for the broker: one pod of Debian's redis-server, no persistence, behind `redis`."""
    labels = {"app": "redis"}
    deployment = {
        "metadata": {"name": "redis", "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "automountServiceAccountToken": False,
                    "containers": [
                        {
                            "name": "redis",
                            "image": image,
                            "imagePullPolicy": "Never",
                            "args": ["--port", "6379", "--bind", "0.0.0.0", "--protected-mode", "no",
                                     "--save", "", "--appendonly", "no", "--dir", "/data"],
                            "ports": [{"containerPort": 6379}],
                            "readinessProbe": {"tcpSocket": {"port": 6379}, "periodSeconds": 1},
                            "securityContext": {"runAsNonRoot": True, "readOnlyRootFilesystem": True,
                                                "allowPrivilegeEscalation": False},
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                        }
                    ],
                    "volumes": [{"name": "data", "emptyDir": {}}],
                    "terminationGracePeriodSeconds": 5,
                },
            },
        },
    }
    service = {"metadata": {"name": "redis"}, "spec": {"selector": labels, "ports": [{"port": 6379}]}}
    return [
        (f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments", deployment),
        (f"/api/v1/namespaces/{NAMESPACE}/services", service),
    ]


def rate_limit_policy() -> dict[str, Any]:
    """A policy the operator turns into the limits ConfigMap the pods load: generous, so that it
    shapes nothing the tests do, and still proves the operator's whole path."""
    return {
        "apiVersion": "tasksync.io/v1alpha1",
        "kind": "RateLimitPolicy",
        "metadata": {"name": "baseline"},
        "spec": {"target": RELEASE, "limits": {"maxConnectionsPerUser": 50, "publishRequestsPerSecondPerKey": 2000,
                                                "publishBurstPerKey": 2000}},
    }


def install_dapr_subscription_crd(api: KubeApi) -> None:
    api.create(CRDS, yaml.safe_load(DAPR_SUBSCRIPTION_CRD.read_text()))

    def established() -> bool:
        conditions = (api.get(f"{CRDS}/subscriptions.dapr.io").get("status") or {}).get("conditions") or []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    wait_until(established, timeout=60, what="Dapr's Subscription CRD established")


def dapr_subscription_of(tasksync_subscription: dict[str, Any]) -> dict[str, Any]:
    """What the operator's Dapr Subscription must say for a TaskSyncSubscription."""
    spec = tasksync_subscription["spec"]
    return {
        "pubsubname": spec["pubsubName"],
        "topic": spec["topic"],
        "route": spec["route"],
        "scopes": spec["scopes"],
    }


def dapr_subscription_says(api: KubeApi, name: str) -> dict[str, Any] | None:
    """The same fields of the Dapr Subscription `name`, or None while there is none."""
    path = f"{DAPR_SUBSCRIPTIONS}/{name}"
    if not api.exists(path):
        return None
    subscription = api.get(path)
    spec = subscription["spec"]
    return {
        "pubsubname": spec.get("pubsubname"),
        "topic": spec.get("topic"),
        "route": spec.get("routes", {}).get("default"),
        "scopes": subscription.get("scopes"),
    }


@dataclass
class Release:
    cluster: KubeCluster
    helm: Helm
    image: str
    kubeconfig: Path
    installed: bool

    @property
    def api(self) -> KubeApi:
        assert self.cluster.api is not None
        return self.cluster.api

    def helm_args(self) -> tuple[str, ...]:
        return ("--namespace", NAMESPACE, "--kubeconfig", str(self.kubeconfig))

    def helm_without_values(self, *args: str) -> str:
        """`helm test` and `helm uninstall`, which take no values files (Helm.run passes one)."""
        result = subprocess.run(
            [self.helm.binary, *args, *self.helm_args()], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, f"helm {' '.join(args)} failed:\n{result.stdout}{result.stderr}"
        return result.stdout

    def uninstall(self, *extra: str) -> None:
        self.helm_without_values("uninstall", RELEASE, "--wait", "--timeout", "3m", *extra)
        self.installed = False

    @property
    def service_ip(self) -> str:
        return self.api.get(f"/api/v1/namespaces/{NAMESPACE}/services/{RELEASE}")["spec"]["clusterIP"]

    @property
    def http(self) -> str:
        return f"http://{self.service_ip}:{SERVICE_PORT}"

    @property
    def ws(self) -> str:
        return f"ws://{self.service_ip}:{SERVICE_PORT}/ws"

    def pods(self, selector: str = SERVICE_PODS) -> list[dict[str, Any]]:
        return self.api.items(f"/api/v1/namespaces/{NAMESPACE}/pods", labelSelector=selector)

    def deployment(self, name: str = RELEASE) -> dict[str, Any]:
        return self.api.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{name}")

    def rolled_out(self, name: str = RELEASE) -> bool:
        """The Deployment's current template runs on every replica, all available, and no pod
        of an older template is left."""
        deployment = self.deployment(name)
        status, want = deployment["status"], deployment["spec"]["replicas"]
        selector = ",".join(f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items())
        return (
            status.get("observedGeneration", 0) >= deployment["metadata"]["generation"]
            and status.get("updatedReplicas") == want
            and status.get("availableReplicas") == want
            and status.get("replicas") == want
            and len(self.pods(selector)) == want
        )


def answers(url: str) -> bool:
    """Whether `url` answers 200; refused, unreachable or another status raise OSError."""
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status == 200


def token(user: str) -> str:
    return hs256({"sub": user, "exp": time.time() + 3600}, JWT_SECRET)


def ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


@pytest.fixture(scope="module")
def helm() -> Helm:
    return Helm(ensure_tools().helm)


@pytest.fixture(scope="module")
def release(kube_cluster: KubeCluster, tasksync_image: str, helm: Helm, timings: dict[str, float]) -> Iterator[Release]:
    api = kube_cluster.api
    assert api is not None and kube_cluster.admin_kubeconfig is not None
    redis_image = kube_cluster.binaries["REDIS_IMAGE"]
    assert redis_image, "redis-server is not installed: scripts/ensure-test-deps.sh installs it"
    kube_cluster.import_image(kube_cluster.binaries["REDIS_IMAGE_ARCHIVE"])
    api.create("/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
    state = Release(kube_cluster, helm, tasksync_image, kube_cluster.admin_kubeconfig, installed=False)
    try:
        # Before the install, as Dapr's own chart would be: the operator then finds the API served.
        install_dapr_subscription_crd(api)
        wait_until(lambda: kube_cluster.namespace_ready(NAMESPACE), timeout=60, what="the namespace ready for pods")
        for path, body in redis_objects(redis_image):
            api.create(path, body)
        wait_until(lambda: state.rolled_out("redis"), timeout=120, what="Redis ready")

        started = time.monotonic()
        state.installed = True  # from here on, even a failed install leaves a release to remove
        helm.run("install", RELEASE, str(CHART), *state.helm_args(), "--wait", "--timeout", "5m",
                 values=chart_values(tasksync_image))
        timings["helm install --wait"] = time.monotonic() - started
        # helm's --wait sees the pods ready; the node's kube-proxy programs the Service's address
        # a moment later, and until then a connection to it from the host is refused (a CI run
        # failed two tests that way).
        wait_until(lambda: answers(f"{state.http}/health/ready"), timeout=60, what="the Service answering")
        yield state
    finally:
        if state.installed:
            # An install that failed early may have left no release behind.
            state.uninstall("--ignore-not-found")
        api.delete(f"/api/v1/namespaces/{NAMESPACE}")
        # The cluster may outlive this module: leave it without the CRD the test brought.
        api.delete(f"{CRDS}/subscriptions.dapr.io")
        wait_until(lambda: not api.exists(f"{CRDS}/subscriptions.dapr.io"), timeout=120,
                   what="Dapr's Subscription CRD removed")


def test_every_pod_is_ready_and_the_service_runs_non_root_on_a_read_only_root(release: Release) -> None:
    service_pods = release.pods()
    assert len(service_pods) == 2
    operator_pods = release.pods(f"{INSTANCE},app.kubernetes.io/component=operator")
    (operator,) = release.api.items(
        f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments",
        labelSelector=f"{INSTANCE},app.kubernetes.io/component=operator",
    )
    assert len(operator_pods) == operator["spec"]["replicas"] >= 1
    for pod in service_pods + operator_pods:
        assert ready(pod), pod["metadata"]["name"]

    for pod in service_pods:
        (container,) = pod["spec"]["containers"]
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        # What the kernel says of the running process, not only what the spec asks for.
        process = release.cluster.container_process(pod, container["name"])
        assert process.uid != 0, f"{pod['metadata']['name']} runs as root"
        assert process.root_read_only, f"{pod['metadata']['name']} has a writable root file system"


def test_the_operator_turns_the_charts_tasksyncsubscription_into_a_dapr_subscription(release: Release) -> None:
    api = release.api
    (chart_subscription,) = api.items(TASKSYNC_SUBSCRIPTIONS, labelSelector=INSTANCE)
    name = chart_subscription["metadata"]["name"]
    expected = dapr_subscription_of(chart_subscription)
    # What the chart's values asked for, so that the comparison is not of two empty things.
    assert expected == {
        "pubsubname": "pubsub",
        "topic": "task-events",
        "route": "/dapr/task-events",
        "scopes": [RELEASE],
    }
    wait_until(lambda: dapr_subscription_says(api, name) == expected, timeout=120,
               what=f"the Dapr Subscription {name} with {expected}")


def service_publisher(release: Release) -> RetryingPublisher:
    """Publishes through the release's Service with the API key, retrying an event (same id, so
    the broker's dedupe keeps it to one) until a pod takes it, the way a backend would."""
    return RetryingPublisher([release.http], headers={"authorization": f"Bearer {API_KEY}"})


def event(n: int, prefix: str) -> dict[str, Any]:
    return {"id": f"{prefix}-{n}", "event": "task.updated", "user_id": USERS[n % len(USERS)], "task": {"n": n}}


async def test_an_event_published_through_the_service_reaches_a_websocket_client_through_it(
    release: Release,
) -> None:
    publisher = service_publisher(release)
    async with SyncClient(release.ws, token=token(USERS[0])) as client:
        await publisher.publish(event(0, "first"))
        frame = await asyncio.wait_for(client.receive(), timeout=30)
    await publisher.aclose()
    assert isinstance(frame, TaskUpdate)
    assert frame.task == {"n": 0}


@dataclass
class Tab:
    user: str
    client: SyncClient
    numbers: list[int] = field(default_factory=list)
    resyncs: int = 0

    async def read_until(self, expected: int) -> None:
        while len(self.numbers) < expected:
            frame = await self.client.receive()
            if isinstance(frame, TaskUpdate):
                self.numbers.append(frame.task["n"])
            elif isinstance(frame, ResyncRequired):
                self.resyncs += 1


async def test_a_rollout_restart_under_steady_publishing_delivers_every_event_exactly_once(
    release: Release, timings: dict[str, float]
) -> None:
    tabs = []
    for user in USERS * 2:
        client = SyncClient(release.ws, token=token(user), reconnect=True, backoff=FAST_BACKOFF, max_attempts=200)
        await client.connect()
        tabs.append(Tab(user, client))
    old_pods = {pod["metadata"]["name"] for pod in release.pods()}
    publisher = service_publisher(release)
    acknowledged: dict[str, list[int]] = {user: [] for user in USERS}
    rolled = asyncio.Event()

    async def stream() -> None:
        # A steady stream from before the restart until after it, then a little more.
        n = 0
        while not rolled.is_set() or n < 40:
            await publisher.publish(event(n, "rollout"))
            acknowledged[USERS[n % len(USERS)]].append(n)
            n += 1
            await asyncio.sleep(0.05)

    streaming = asyncio.create_task(stream())
    await eventually(lambda: sum(map(len, acknowledged.values())) >= 20, timeout=60, what="load before the restart")
    started = time.monotonic()
    release.api.patch(
        f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{RELEASE}",
        {"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": str(started)}}}}},
    )
    await eventually(
        lambda: asyncio.to_thread(
            lambda: release.rolled_out() and not old_pods & {p["metadata"]["name"] for p in release.pods()}
        ),
        timeout=300,
        interval=0.5,
        what="the rollout restart to finish",
    )
    timings["rollout restart of two service pods"] = time.monotonic() - started
    rolled.set()
    await asyncio.wait_for(streaming, timeout=120)
    await publisher.aclose()

    expected = {user: sorted(numbers) for user, numbers in acknowledged.items()}
    await asyncio.wait_for(asyncio.gather(*(tab.read_until(len(expected[tab.user])) for tab in tabs)), timeout=120)
    reconnects = sum(tab.client.connections - 1 for tab in tabs)
    print(f"published {sum(map(len, expected.values()))} events ({publisher.retries} retries), "
          f"{reconnects} reconnects")
    for tab in tabs:
        await tab.client.close()
        assert tab.numbers == expected[tab.user], f"{tab.user}: lost, duplicated or reordered events"
        assert tab.resyncs == 0
    # Every tab was on a pod that went away, and came back through the Service.
    assert all(tab.client.connections >= 2 for tab in tabs)


def test_helm_test_passes(release: Release) -> None:
    output = release.helm_without_values("test", RELEASE, "--timeout", "3m")
    assert "Phase:          Succeeded" in output, output


async def test_prometheus_scrapes_the_pods_and_the_dashboard_connection_queries_return_data(
    release: Release, tmp_path: Path
) -> None:
    api = release.api
    policy = rate_limit_policy()
    api.create(f"/apis/tasksync.io/v1alpha1/namespaces/{NAMESPACE}/ratelimitpolicies", policy)
    pod_ips = [pod["status"]["podIP"] for pod in release.pods()]
    prometheus = PrometheusServer(
        ensure_tools().prometheus,
        tmp_path,
        job=RELEASE,
        targets=[f"{ip}:{SERVICE_PORT}" for ip in pod_ips],
        # The label Kubernetes service discovery adds, which the dashboard selects on.
        target_labels={"namespace": NAMESPACE},
    ).start()
    clients: list[SyncClient] = []
    readers: list[asyncio.Task[None]] = []
    try:
        queries = [(q.panel, q.ref_id, grafana_to_promql(q.expr, DASHBOARD_VARIABLES)) for q in dashboard_queries()]
        # The stat panels' totals (the other panels of the same titles break them down by pod).
        active, generation = (
            next(promql for panel, _, promql in queries if panel == title and "by (pod)" not in promql)
            for title in ("Active connections", "Limits generation")
        )
        # Every pod scraped once before the traffic, so that each counter's increase is seen.
        await eventually(lambda: _value(prometheus, "count(up == 1)", len(pod_ips)), timeout=60,
                         what="every pod scraped")

        # Clients through the Service: two reconnect once, as clients do, and one holds a token
        # that expires, so the server closes it (a disconnect that is not the client's).
        for n in range(4):
            expires = time.time() + (2 if n == 3 else 3600)
            client = SyncClient(release.ws, token=hs256({"sub": USERS[n], "exp": expires}, JWT_SECRET))
            await client.connect()
            if n in (1, 2):
                await client.close()
                await client.connect()  # its handshake now says it is a reconnect
            clients.append(client)
            readers.append(asyncio.create_task(answer_pings(client)))
        for panel, ref_id, promql in queries:
            if panel in ("Active connections", "Connects by kind", "Reconnect rate", "Disconnects by reason"):
                # The server-side close comes when the token expires, its leeway (30 s) later.
                assert await eventually(lambda promql=promql: prometheus.query(promql), timeout=120,
                                        what=f"data for {panel} ({ref_id}): {promql}")
        await eventually(lambda: _value(prometheus, active, 3.0), timeout=60, what=f"{active} == 3")
        reconnects = f'sum(increase(tasksync_reconnects_total{{namespace="{NAMESPACE}"}}[5m]))'
        await eventually(lambda: _positive(prometheus, reconnects), timeout=60, what="reconnects counted")
        # The operator turned the policy into the limits file, and every pod loaded it.
        await eventually(lambda: _positive(prometheus, generation), timeout=180, what="the policy's limits loaded")
    finally:
        for reader in readers:
            reader.cancel()
        for client in clients:
            await client.close()
        prometheus.stop()
        print(f"--- prometheus log ---\n{prometheus.log()}")


async def answer_pings(client: SyncClient) -> None:
    """Keep a socket alive until the server closes it: receiving is what answers its pings."""
    with contextlib.suppress(ClientClosed):
        while True:
            await client.receive()


async def _value(prometheus: PrometheusServer, promql: str, expected: float) -> bool:
    result = await prometheus.query(promql)
    return bool(result) and float(result[0]["value"][1]) == expected


async def _positive(prometheus: PrometheusServer, promql: str) -> bool:
    result = await prometheus.query(promql)
    return bool(result) and float(result[0]["value"][1]) > 0


def lease_holder_pod(release: Release, lease: str) -> str | None:
    """The pod whose operator holds the Lease: its identity is the pod's hostname (the pod's
    name) and a per-process suffix."""
    holder = release.api.get(f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/{lease}")["spec"].get(
        "holderIdentity"
    )
    return holder.rsplit("_", 1)[0] if holder else None


def test_killing_the_leading_operator_hands_over_to_the_standby(release: Release, timings: dict[str, float]) -> None:
    api = release.api
    (operator,) = api.items(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments", labelSelector=OPERATOR_PODS)
    assert operator["spec"]["replicas"] == 2
    wait_until(lambda: release.rolled_out(operator["metadata"]["name"]), timeout=180, what="both operator replicas")
    (lease,) = (arg.split("=", 1)[1] for arg in operator["spec"]["template"]["spec"]["containers"][0]["command"]
                if arg.startswith("--leader-elect-resource-name="))
    pods = {pod["metadata"]["name"]: pod for pod in release.pods(OPERATOR_PODS)}
    leader = wait_until(lambda: lease_holder_pod(release, lease), timeout=60, what=f"a holder of Lease {lease}")
    assert leader in pods
    (standby,) = set(pods) - {leader}

    # SIGKILL, so that the leader cannot release the Lease on its way out as it would on
    # SIGTERM; then the pod goes too, so that the process cannot come back in it.
    pod = pods[leader]
    container = pod["spec"]["containers"][0]["name"]
    os.kill(release.cluster.container_process(pod, container).pid, signal.SIGKILL)
    killed = time.monotonic()
    api.delete(f"/api/v1/namespaces/{NAMESPACE}/pods/{leader}", gracePeriodSeconds="0")

    # Work only a leader does: a second TaskSyncSubscription into a second Dapr Subscription.
    chart_subscription = api.get(f"{TASKSYNC_SUBSCRIPTIONS}/{RELEASE}")
    name = f"{RELEASE}-failover"
    second = {
        "apiVersion": "tasksync.io/v1alpha1",
        "kind": "TaskSyncSubscription",
        "metadata": {"name": name},
        "spec": {**chart_subscription["spec"], "topic": "task-events-failover", "route": "/dapr/failover"},
    }
    api.create(TASKSYNC_SUBSCRIPTIONS, second)
    try:
        expected = dapr_subscription_of(second)
        # The Lease lasts 15 s in the chart; the rest is a slow, shared machine.
        wait_until(lambda: dapr_subscription_says(api, name) == expected, timeout=90,
                   what=f"the Dapr Subscription {name} after the leader was killed")
        timings["operator failover: leader killed to new subscription reconciled"] = time.monotonic() - killed
        new_leader = wait_until(lambda: lease_holder_pod(release, lease), timeout=30, what="the Lease held")
        assert new_leader != leader, f"the Lease still names the killed pod {leader}"
        print(f"Lease {lease}: {leader} killed, {new_leader} leads (standby was {standby})")
    finally:
        api.delete(f"{TASKSYNC_SUBSCRIPTIONS}/{name}")
        # The Dapr Subscription is owned by the TaskSyncSubscription: the garbage collector removes it.
        wait_until(lambda: not api.exists(f"{DAPR_SUBSCRIPTIONS}/{name}"), timeout=120,
                   what=f"the Dapr Subscription {name} removed with its TaskSyncSubscription")


def test_helm_upgrade_with_a_changed_value_rolls_the_pods(release: Release) -> None:
    before = {pod["metadata"]["name"] for pod in release.pods()}
    release.helm.run("upgrade", RELEASE, str(CHART), *release.helm_args(), "--wait", "--timeout", "5m",
                     values={**chart_values(release.image), "logLevel": "debug"})
    wait_until(lambda: release.rolled_out() and not before & {p["metadata"]["name"] for p in release.pods()},
               timeout=300, what="the upgraded pods to replace the old ones")
    for pod in release.pods():
        assert ready(pod)
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0].get("env", [])}
        assert env["TASKSYNC_LOG_LEVEL"] == "debug"


def test_helm_uninstall_leaves_only_the_crds_and_nothing_stuck_terminating(release: Release) -> None:
    api = release.api
    # A policy's finalizer is the operator's to remove: delete it while the operator runs.
    api.delete(f"/apis/tasksync.io/v1alpha1/namespaces/{NAMESPACE}/ratelimitpolicies/baseline")
    wait_until(
        lambda: not api.items(f"/apis/tasksync.io/v1alpha1/namespaces/{NAMESPACE}/ratelimitpolicies"),
        timeout=60,
        what="the RateLimitPolicy deleted",
    )
    release.uninstall()

    def what_is_left() -> list[str]:
        left = []
        for path in (
            f"/api/v1/namespaces/{NAMESPACE}/pods",
            f"/api/v1/namespaces/{NAMESPACE}/services",
            f"/api/v1/namespaces/{NAMESPACE}/configmaps",
            f"/api/v1/namespaces/{NAMESPACE}/secrets",
            f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts",
            f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments",
            f"/apis/apps/v1/namespaces/{NAMESPACE}/replicasets",
            f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NAMESPACE}/roles",
            f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NAMESPACE}/rolebindings",
            "/apis/rbac.authorization.k8s.io/v1/clusterroles",
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        ):
            for item in api.items(path):
                meta = item["metadata"]
                name = meta["name"]
                if name.startswith(RELEASE) or meta.get("labels", {}).get("app.kubernetes.io/instance") == RELEASE:
                    left.append(f"{path}/{name}" + (" (terminating)" if meta.get("deletionTimestamp") else ""))
        return left

    def nothing_left() -> bool:
        left = what_is_left()
        assert not left, left
        return True

    wait_until(nothing_left, timeout=120, what="nothing of the release left")
    crds = {crd["metadata"]["name"] for crd in api.items("/apis/apiextensions.k8s.io/v1/customresourcedefinitions")}
    assert {"ratelimitpolicies.tasksync.io", "tasksyncsubscriptions.tasksync.io", "subscriptions.dapr.io"} <= crds
    # The chart's TaskSyncSubscription went with the release, and its Dapr Subscription with it.
    wait_until(lambda: not api.items(TASKSYNC_SUBSCRIPTIONS) and not api.items(DAPR_SUBSCRIPTIONS), timeout=120,
               what="the TaskSyncSubscription and its Dapr Subscription removed")
    # The namespace itself goes away, which it does only once nothing in it holds a finalizer.
    api.delete(f"/api/v1/namespaces/{NAMESPACE}")
    wait_until(lambda: not api.exists(f"/api/v1/namespaces/{NAMESPACE}"), timeout=120,
               what=f"namespace {NAMESPACE} deleted")
