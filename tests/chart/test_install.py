"""`helm install` and `helm upgrade` against a real API server (etcd and kube-apiserver, run as the
operator tests run them): what only a cluster shows, the chart reading its own Secret back with
`lookup`."""

from __future__ import annotations

import base64
import json
import ssl
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.chart.charttools import CHART, MINIMAL_VALUES, NAMESPACE, RELEASE, Helm
from tests.operator.operator_testkit import ADMIN_USER, LocalCluster, ensure_binaries

# Starting etcd and kube-apiserver on a shared two-core machine, then four helm runs.
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    binaries = ensure_binaries()
    local = LocalCluster(tmp_path_factory.mktemp("kube"), binaries["ETCD"], binaries["KUBE_APISERVER"])
    try:
        local.start()
        yield local
    finally:
        local.stop()


def get(cluster: LocalCluster, path: str) -> dict[str, Any]:
    context = ssl.create_default_context(cafile=str(cluster.ca_path))
    request = urllib.request.Request(
        cluster.server + path, headers={"Authorization": f"Bearer {cluster.tokens[ADMIN_USER]}"}
    )
    with urllib.request.urlopen(request, context=context, timeout=30) as response:
        return json.load(response)


def dapr_token(cluster: LocalCluster) -> str:
    """The token in the Secret the pods' dapr.io/app-token-secret annotation names."""
    name = pod_annotations(cluster)["dapr.io/app-token-secret"]
    secret = get(cluster, f"/api/v1/namespaces/{NAMESPACE}/secrets/{name}")
    return base64.b64decode(secret["data"]["token"]).decode()


def pod_annotations(cluster: LocalCluster) -> dict[str, str]:
    deployment = get(cluster, f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{RELEASE}")
    return deployment["spec"]["template"]["metadata"]["annotations"]


def test_a_generated_dapr_token_is_kept_across_helm_upgrade(helm: Helm, cluster: LocalCluster) -> None:
    kube = (str(CHART), "--namespace", NAMESPACE, "--kubeconfig", str(cluster.kubeconfig(ADMIN_USER)))

    def deployed() -> tuple[str, str]:
        # A changed checksum rolls every pod, draining all their sockets.
        return dapr_token(cluster), pod_annotations(cluster)["checksum/secret"]

    helm.run("install", RELEASE, *kube, "--create-namespace", values=MINIMAL_VALUES)
    generated, checksum = deployed()
    assert len(generated) == 48

    helm.run("upgrade", RELEASE, *kube, values={**MINIMAL_VALUES, "logLevel": "debug"})
    assert deployed() == (generated, checksum), "the token the sidecars send must survive an upgrade"

    # A token given later replaces the generated one, and the pods roll to pick it up.
    helm.run("upgrade", RELEASE, *kube, values={**MINIMAL_VALUES, "dapr": {"appToken": "chosen-token"}})
    token, rolled = deployed()
    assert token == "chosen-token"
    assert rolled != checksum

    # Dropping it from the values keeps what the Secret holds rather than generating anew.
    helm.run("upgrade", RELEASE, *kube, values=MINIMAL_VALUES)
    assert deployed() == ("chosen-token", rolled)
