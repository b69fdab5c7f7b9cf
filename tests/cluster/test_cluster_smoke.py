"""The test cluster works as a cluster: pods run on the node, the scheduler places a Deployment's
pods, kube-proxy routes a ClusterIP Service from the host and a NodePort on 127.0.0.1, and the
cluster DNS names Services (and nothing outside the cluster)."""

from __future__ import annotations

import ipaddress
import secrets
import socket
import struct
import time
from typing import Any

import httpx
import pytest

from tests.cluster.components import NODE_NAME
from tests.cluster.kube_api import KubeApi
from tests.cluster.kube_cluster import KubeCluster
from tests.support.waiting import wait_until

# The first test also starts the cluster (tens of seconds on a shared two-core machine).
pytestmark = pytest.mark.timeout(600)

HELLO_PORT = 8080
APP = "hello"


def api(cluster: KubeCluster) -> KubeApi:
    assert cluster.api is not None
    return cluster.api


def condition(obj: dict[str, Any], kind: str) -> bool:
    return any(c["type"] == kind and c["status"] == "True" for c in obj.get("status", {}).get("conditions", []))


def ready_pods(cluster: KubeCluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    pods = api(cluster).items(f"/api/v1/namespaces/{namespace}/pods", labelSelector=selector)
    return [pod for pod in pods if condition(pod, "Ready")]


def hello_deployment(replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": APP},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": APP}},
            "template": {
                "metadata": {"labels": {"app": APP}},
                "spec": {
                    "containers": [
                        {
                            "name": APP,
                            "image": "",  # filled in by the test: the locally built image
                            "imagePullPolicy": "Never",
                            "ports": [{"containerPort": HELLO_PORT}],
                            "readinessProbe": {"httpGet": {"path": "/", "port": HELLO_PORT}, "periodSeconds": 1},
                            "securityContext": {"runAsNonRoot": True, "readOnlyRootFilesystem": True,
                                                "allowPrivilegeEscalation": False},
                        }
                    ],
                    "terminationGracePeriodSeconds": 5,
                },
            },
        },
    }


@pytest.fixture
def hello(kube_cluster: KubeCluster, namespace: str) -> list[dict[str, Any]]:
    """Two Ready replicas of the tiny HTTP server, placed by the scheduler."""
    deployment = hello_deployment(replicas=2)
    deployment["spec"]["template"]["spec"]["containers"][0]["image"] = kube_cluster.binaries["HELLO_IMAGE"]
    api(kube_cluster).create(f"/apis/apps/v1/namespaces/{namespace}/deployments", deployment)
    return wait_until(
        lambda: (pods := ready_pods(kube_cluster, namespace, f"app={APP}")) and len(pods) == 2 and pods,
        timeout=180,
        what="two Ready hello pods",
    )


def test_a_pod_becomes_ready_on_the_node(
    kube_cluster: KubeCluster, namespace: str, timings: dict[str, float]
) -> None:
    pod = {
        "metadata": {"name": "pause"},
        "spec": {
            "containers": [
                {"name": "pause", "image": kube_cluster.binaries["PAUSE_IMAGE"], "imagePullPolicy": "Never"}
            ],
            "terminationGracePeriodSeconds": 5,
        },
    }
    created = time.monotonic()
    api(kube_cluster).create(f"/api/v1/namespaces/{namespace}/pods", pod)
    path = f"/api/v1/namespaces/{namespace}/pods/pause"
    ready = wait_until(lambda: condition(status := api(kube_cluster).get(path), "Ready") and status,
                       timeout=120, what="the pause pod Ready")
    timings.setdefault("pod created to Ready", time.monotonic() - created)

    assert ready["spec"]["nodeName"] == NODE_NAME
    assert ipaddress.ip_address(ready["status"]["podIP"]) in ipaddress.ip_network(kube_cluster.network.pod_cidr)


def test_the_scheduler_places_a_deployments_pods(kube_cluster: KubeCluster, hello: list[dict[str, Any]]) -> None:
    for pod in hello:
        # Nobody set nodeName: the scheduler bound the pod, and says so.
        assert pod["spec"]["nodeName"] == NODE_NAME
        assert condition(pod, "PodScheduled")
        assert pod["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"


def test_a_cluster_ip_service_routes_from_the_host_to_every_pod(
    kube_cluster: KubeCluster, namespace: str, hello: list[dict[str, Any]]
) -> None:
    service = api(kube_cluster).create(
        f"/api/v1/namespaces/{namespace}/services",
        {
            "metadata": {"name": APP},
            "spec": {"selector": {"app": APP}, "ports": [{"port": 80, "targetPort": HELLO_PORT}]},
        },
    )
    cluster_ip = service["spec"]["clusterIP"]
    assert ipaddress.ip_address(cluster_ip) in ipaddress.ip_network(kube_cluster.network.service_cidr)

    names = {pod["metadata"]["name"] for pod in hello}
    answered: set[str] = set()

    def every_pod_answered() -> bool:
        # kube-proxy picks an endpoint at random per connection: both show up within a few.
        try:
            response = httpx.get(f"http://{cluster_ip}/", timeout=5)
        except httpx.TransportError:
            return False  # the rules are written within a second of the endpoints
        assert response.status_code == 200 and response.text.startswith("hello from "), (
            response.status_code, response.headers, response.text)
        answered.add(response.text.strip().removeprefix("hello from "))
        return answered >= names

    wait_until(every_pod_answered, timeout=60, interval=0.1, what=f"answers from {names} through {cluster_ip}")
    assert answered == names


def test_a_node_port_answers_on_loopback(
    kube_cluster: KubeCluster, namespace: str, hello: list[dict[str, Any]]
) -> None:
    service = api(kube_cluster).create(
        f"/api/v1/namespaces/{namespace}/services",
        {
            "metadata": {"name": f"{APP}-nodeport"},
            "spec": {
                "type": "NodePort",
                "selector": {"app": APP},
                "ports": [{"port": 80, "targetPort": HELLO_PORT}],
            },
        },
    )
    node_port = service["spec"]["ports"][0]["nodePort"]
    names = {pod["metadata"]["name"] for pod in hello}

    def answer() -> str | None:
        try:
            return httpx.get(f"http://127.0.0.1:{node_port}/", timeout=5).text
        except httpx.TransportError:
            return None

    body = wait_until(answer, timeout=60, interval=0.1, what=f"an answer on 127.0.0.1:{node_port}")
    assert body.strip().removeprefix("hello from ") in names


def skip_name(packet: bytes, offset: int) -> int:
    """The offset just past a DNS name: labels up to the root, or up to a compression pointer."""
    while packet[offset]:
        if packet[offset] & 0xC0 == 0xC0:
            return offset + 2
        offset += 1 + packet[offset]
    return offset + 1


def query_a(server: str, name: str) -> tuple[int, list[str]]:
    """Ask a DNS server for the A records of `name` over UDP: (response code, addresses)."""
    query_id = secrets.randbelow(1 << 16)
    question = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
    packet = struct.pack("!HHHHHH", query_id, 0x0100, 1, 0, 0, 0) + question + struct.pack("!HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(packet, (server, 53))
        answer = sock.recv(4096)
    answer_id, flags, _, answer_count = struct.unpack("!HHHH", answer[:8])
    assert answer_id == query_id
    offset = 12 + len(question) + 4
    addresses = []
    for _ in range(answer_count):
        offset = skip_name(answer, offset)
        kind, _, _, length = struct.unpack("!HHIH", answer[offset : offset + 10])
        offset += 10
        if kind == 1:
            addresses.append(socket.inet_ntoa(answer[offset : offset + length]))
        offset += length
    return flags & 0xF, addresses


def test_the_cluster_dns_names_services_and_only_them(kube_cluster: KubeCluster, namespace: str) -> None:
    service = api(kube_cluster).create(
        f"/api/v1/namespaces/{namespace}/services",
        {"metadata": {"name": "named"}, "spec": {"selector": {"app": "none"}, "ports": [{"port": 80}]}},
    )
    dns = kube_cluster.network.node_ip

    def resolved() -> list[str]:
        return query_a(dns, f"named.{namespace}.svc.cluster.local")[1]

    # CoreDNS learns of the Service through its watch, within a moment.
    assert wait_until(resolved, timeout=30, what="the Service's name in the cluster DNS") == [
        service["spec"]["clusterIP"]
    ]
    assert query_a(dns, "kubernetes.default.svc.cluster.local")[1] == [kube_cluster.network.kubernetes_service_ip]
    # No forwarding: a name outside the cluster gets no answer from here (REFUSED or SERVFAIL).
    code, addresses = query_a(dns, "example.com")
    assert (code, addresses) != (0, []) and not addresses
