"""A real, local Kubernetes API server for the operator tests, and helpers to talk to it.

`LocalCluster` runs etcd and kube-apiserver (binaries from scripts/ensure-kube.sh) on free
loopback ports in a temporary directory: a self-signed serving certificate, a static token file
with two users (an admin in system:masters, and the operator, which gets only the RBAC of
tasksync_operator.rbac), RBAC authorization and the OwnerReferencesPermissionEnforcement
admission plugin, so the tests also prove that the documented RBAC is enough.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import secrets
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from tasksync_operator.model import DAPR_GROUP, DAPR_PLURAL, DAPR_VERSION, GROUP, TSS_PLURAL, VERSION
from tests.support import waiting
from tests.support.servers import free_port
from tests.support.tls import write_self_signed

REPO = Path(__file__).resolve().parents[2]
ENSURE_KUBE = REPO / "scripts" / "ensure-kube.sh"
CRD_DIR = REPO / "charts" / "tasksync" / "crds"
DAPR_CRD = Path(__file__).parent / "fixtures" / "dapr-subscription-crd.yaml"

ADMIN_USER = "admin"
OPERATOR_USER = "tasksync-operator"

# The Lease the operator processes of the leader-election tests compete for; the operator's user
# may use this one Lease (tasksync_operator.rbac.leader_election_rules) and no other.
LEASE_NAMESPACE = "tasksync-system"
LEASE_NAME = "tasksync-operator"

# The ValidatingAdmissionPolicy (and its binding) holding the operator's user to
# tasksync_operator.rbac.configmap_write_policy.
CONFIGMAP_POLICY = "tasksync-operator-configmaps"


def ensure_binaries() -> dict[str, str]:
    """Install/build etcd and kube-apiserver if needed; return {"ETCD": path, "KUBE_APISERVER": path}."""
    result = subprocess.run([str(ENSURE_KUBE)], check=True, stdout=subprocess.PIPE, text=True)
    paths = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    return {key: paths[key] for key in ("ETCD", "KUBE_APISERVER")}


@dataclass
class LocalCluster:
    workdir: Path
    etcd_bin: str
    apiserver_bin: str
    tokens: dict[str, str] = field(default_factory=dict)
    server: str = ""
    _processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def ca_path(self) -> Path:
        return self.workdir / "serving.crt"

    def start(self, *, deadline_seconds: float = 90.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        write_self_signed(self.ca_path, self.workdir / "serving.key", "tasksync-test-apiserver")
        # The API server signs service account tokens; it refuses to start without a key.
        write_self_signed(self.workdir / "sa.crt", self.workdir / "sa.key", "tasksync-test-apiserver")
        self.tokens = {user: secrets.token_hex(16) for user in (ADMIN_USER, OPERATOR_USER)}
        (self.workdir / "tokens.csv").write_text(
            f'{self.tokens[ADMIN_USER]},{ADMIN_USER},uid-admin,"system:masters"\n'
            f"{self.tokens[OPERATOR_USER]},{OPERATOR_USER},uid-operator\n"
        )
        client_port, peer_port, api_port = free_port(), free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{client_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        self._spawn(
            "etcd",
            [
                self.etcd_bin,
                "--name=test",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=test={peer_url}",
            ],
        )
        self._spawn(
            "kube-apiserver",
            [
                self.apiserver_bin,
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--cert-dir={self.workdir / 'certs'}",
                f"--tls-cert-file={self.ca_path}",
                f"--tls-private-key-file={self.workdir / 'serving.key'}",
                f"--token-auth-file={self.workdir / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={self.workdir / 'sa.key'}",
                f"--service-account-signing-key-file={self.workdir / 'sa.key'}",
                "--service-cluster-ip-range=10.0.0.0/24",
                # No kubelets or controllers here: skip what only they would use, and the
                # loopback address cannot be published as the kubernetes Service endpoint.
                "--endpoint-reconciler-type=none",
                "--enable-priority-and-fairness=false",
                "--profiling=false",
            ],
        )
        self.server = f"https://127.0.0.1:{api_port}"
        self._wait_ready(deadline_seconds)

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115  (owned by the process)
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        self._processes.append(process)

    def _wait_ready(self, deadline_seconds: float) -> None:
        context = ssl.create_default_context(cafile=str(self.ca_path))
        request = urllib.request.Request(
            f"{self.server}/readyz", headers={"Authorization": f"Bearer {self.tokens[ADMIN_USER]}"}
        )
        deadline = time.monotonic() + deadline_seconds
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            for process in self._processes:
                if process.poll() is not None:
                    raise RuntimeError(f"{process.args[0]} exited with {process.returncode}:\n{self.logs()}")
            try:
                with urllib.request.urlopen(request, context=context, timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError) as exc:
                last_error = str(exc)
            time.sleep(0.25)
        raise RuntimeError(
            f"kube-apiserver not ready within {deadline_seconds}s ({last_error}):\n{self.logs()}"
        )

    def logs(self, tail: int = 40) -> str:
        parts = []
        for log in sorted(self.workdir.glob("*.log")):
            lines = log.read_text(errors="replace").splitlines()[-tail:]
            parts.append(f"--- {log.name} ---\n" + "\n".join(lines))
        return "\n".join(parts)

    def kubeconfig(self, user: str, *, server: str | None = None) -> Path:
        """A kubeconfig for `user`; `server` reaches the API server through something else (a
        plain-HTTP proxy such as api_proxy.DiscoveryProxy)."""
        if server is None:
            path = self.workdir / f"{user}.kubeconfig"
            cluster = {"server": self.server, "certificate-authority": str(self.ca_path)}
        else:
            path = self.workdir / f"{user}-via-{server.rsplit(':', 1)[-1]}.kubeconfig"
            cluster = {"server": server}
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "local", "cluster": cluster}],
                    "users": [{"name": user, "user": {"token": self.tokens[user]}}],
                    "contexts": [{"name": user, "context": {"cluster": "local", "user": user}}],
                    "current-context": user,
                }
            )
        )
        os.chmod(path, 0o600)
        return path

    def stop(self) -> None:
        # API server first, so it does not spend its shutdown retrying a vanished etcd.
        for process in reversed(self._processes):
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._processes.clear()


def wait_http_ok(url: str, *, deadline_seconds: float) -> None:
    """Block until GET `url` answers 200 (a plain-HTTP endpoint such as kopf's liveness)."""
    deadline = time.monotonic() + deadline_seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            if time.monotonic() >= deadline:
                raise
        time.sleep(0.1)


# Controller outcomes are probes made of asserts, given longer than the service's, polled less often.
eventually = functools.partial(waiting.eventually, timeout=30.0, interval=0.1, truthy=False)


def tss(name: str, **spec: Any) -> dict[str, Any]:
    """A TaskSyncSubscription body: the required fields, then `spec` on top."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TaskSyncSubscription",
        "metadata": {"name": name},
        "spec": {"pubsubName": "pubsub", "topic": "task-events", "scopes": ["tasksync"], **spec},
    }


async def create_tss(kube: client.ApiClient, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    return await client.CustomObjectsApi(kube).create_namespaced_custom_object(
        GROUP, VERSION, namespace, TSS_PLURAL, body
    )


async def read_tss(kube: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return await client.CustomObjectsApi(kube).get_namespaced_custom_object(
        GROUP, VERSION, namespace, TSS_PLURAL, name
    )


async def read_subscription(kube: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    try:
        return await client.CustomObjectsApi(kube).get_namespaced_custom_object(
            DAPR_GROUP, DAPR_VERSION, namespace, DAPR_PLURAL, name
        )
    except ApiException as exc:
        raise AssertionError(f"Subscription {name}: {exc.status}") from exc


def ready(obj: dict[str, Any]) -> dict[str, Any]:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Ready"), {})


async def wait_ready(
    kube: client.ApiClient,
    namespace: str,
    name: str,
    status: str = "True",
    reason: str | None = None,
    *,
    timeout: float = 30.0,
) -> dict[str, Any]:
    """Until the TaskSyncSubscription reports this Ready status for its current generation."""

    async def probe() -> dict[str, Any]:
        obj = await read_tss(kube, namespace, name)
        condition = ready(obj)
        assert condition.get("status") == status, condition
        assert reason is None or condition.get("reason") == reason, condition
        assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"], obj["status"]
        return obj

    return await eventually(probe, timeout=timeout)


def load_yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


async def apply_crd(api: client.ApiClient, crd: dict[str, Any]) -> None:
    """Create a CRD (if absent) and wait until the API server serves it."""
    extensions = client.ApiextensionsV1Api(api)
    try:
        await extensions.create_custom_resource_definition(crd)
    except ApiException as exc:
        if exc.status != 409:
            raise

    async def established() -> None:
        current = await extensions.read_custom_resource_definition(crd["metadata"]["name"])
        states = {c.type: c.status for c in current.status.conditions or []}
        assert states.get("Established") == "True", states

    await eventually(established)


@dataclass
class OperatorProcess:
    """`tasksync-operator` in a process of its own, the way its Deployment runs it."""

    argv: list[str]
    log_path: Path
    liveness_url: str
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        return self

    @property
    def running(self) -> subprocess.Popen[bytes]:
        assert self.process is not None, "not started"
        return self.process

    async def wait_live(self, *, timeout: float = 60.0) -> None:
        """Until the liveness endpoint answers 200 (failing at once if the process exits)."""

        def probe() -> None:
            assert self.running.poll() is None, (
                f"operator exited with {self.running.returncode}:\n{self.log_path.read_text()[-4000:]}"
            )
            try:
                with urllib.request.urlopen(self.liveness_url, timeout=5) as response:
                    assert response.status == 200, response.status
            except (urllib.error.URLError, OSError) as exc:
                raise AssertionError(f"{self.liveness_url}: {exc}") from exc

        async def live() -> None:
            await asyncio.to_thread(probe)

        await eventually(live, timeout=timeout, interval=0.25)

    def log_lines(self) -> list[dict[str, Any]]:
        """The JSON log lines so far (anything else, e.g. a traceback, as {"message": line})."""
        lines: list[dict[str, Any]] = []
        for raw in self.log_path.read_text(errors="replace").splitlines():
            try:
                line = json.loads(raw)
            except ValueError:
                line = {"message": raw}
            lines.append(line if isinstance(line, dict) else {"message": raw})
        return lines

    def handled(self, name: str) -> bool:
        """Whether this operator logged anything about an object of that name."""
        return any((line.get("object") or {}).get("name") == name for line in self.log_lines())

    async def stop(self, *, timeout: float = 30.0) -> int:
        """SIGTERM, as the kubelet stops a pod; the exit code."""
        self.running.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(self.running.wait, timeout)

    def kill(self) -> None:
        """SIGKILL: a crashed node or an OOM kill, no chance to clean up."""
        if self.running.poll() is None:
            self.running.kill()
        self.running.wait()


async def remove_dapr_crd(kube: client.ApiClient) -> None:
    """Delete the Dapr Subscription CRD and wait until discovery no longer serves its group."""
    try:
        await client.ApiextensionsV1Api(kube).delete_custom_resource_definition("subscriptions.dapr.io")
    except ApiException as exc:
        if exc.status != 404:
            raise

    async def gone() -> None:
        groups = await client.ApisApi(kube).get_api_versions()
        assert DAPR_GROUP not in {group.name for group in groups.groups}

    await eventually(gone, timeout=60)
