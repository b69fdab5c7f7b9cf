"""A real single-node Kubernetes cluster on this machine, for tests that need pods to run.

`KubeCluster` starts, under one state directory: etcd, kube-apiserver, kube-controller-manager
and kube-scheduler (the control plane), CoreDNS, then containerd, the kubelet and kube-proxy (the
node), all built or installed by scripts/ensure-kube.sh, authenticated with client certificates from one
throwaway CA (tests/cluster/pki.py). The node's network is a bridge at 172.31.253.1 that keeps
pod traffic inside the machine (tests/cluster/host.py); images are imported, never pulled.

`stop()` deletes every pod and waits for the kubelet to tear it down, stops every component, and
then has `HostFootprint` undo what the node changed on the machine; it raises if anything is left.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.cluster import components
from tests.cluster.components import NODE_NAME, KubeletPorts, NodeLayout, ProxyPorts
from tests.cluster.host import ContainerProcess, HostFootprint, PodNetwork, container_process
from tests.cluster.kube_api import KubeApi
from tests.cluster.pki import ClusterPki, Identity
from tests.support.servers import free_port

REPO = Path(__file__).resolve().parents[2]
ENSURE_KUBE = REPO / "scripts" / "ensure-kube.sh"

ADMIN = Identity("tasksync-test-admin", ("system:masters",))


@dataclass(frozen=True)
class ClusterBinaries:
    """Everything scripts/ensure-kube.sh provides, by its output's keys."""

    paths: dict[str, str]

    def __getitem__(self, key: str) -> str:
        return self.paths[key]


def ensure_cluster_binaries() -> ClusterBinaries:
    """Build or install what is missing (minutes the first time, then instant)."""
    result = subprocess.run(["bash", str(ENSURE_KUBE)], check=True, stdout=subprocess.PIPE, text=True)
    return ClusterBinaries(dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line))


class ClusterFailed(RuntimeError):
    pass


@dataclass
class KubeCluster:
    binaries: ClusterBinaries
    state_dir: Path
    network: PodNetwork = field(default_factory=PodNetwork)
    # How long each step of `start()` took, in seconds, for the tests to report.
    timings: dict[str, float] = field(default_factory=dict)
    api: KubeApi | None = None
    admin_kubeconfig: Path | None = None
    _processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _host: HostFootprint | None = None

    @property
    def layout(self) -> NodeLayout:
        return NodeLayout(self.state_dir)

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    # -- starting ---------------------------------------------------------------------------

    def start(self) -> None:
        began = time.monotonic()
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self._host = HostFootprint(self.network, self.state_dir)
        self._host.claim(timeout=600)
        self._host.contain()
        pki = ClusterPki(self.state_dir / "pki")
        server = f"https://{self.network.node_ip}:{free_port()}"
        self._start_control_plane(pki, server)
        self._start_dns(pki, server)
        self.timings["control plane and DNS ready"] = time.monotonic() - began
        self._start_node(pki, server)
        self.timings["node ready"] = time.monotonic() - began
        self._wait(self._default_service_account_ready, 120, "the default ServiceAccount and CA bundle")
        self.timings["cluster ready"] = time.monotonic() - began

    def _start_control_plane(self, pki: ClusterPki, server: str) -> None:
        node_ip = self.network.node_ip
        serving = pki.server(
            "apiserver",
            "kube-apiserver",
            dns=["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                 "kubernetes.default.svc.cluster.local"],
            ips=["127.0.0.1", node_ip, self.network.kubernetes_service_ip],
        )
        kubelet_client = pki.client(
            "apiserver-kubelet-client", Identity("kube-apiserver-kubelet-client", ("system:masters",))
        )
        service_accounts = pki.service_account_keys()
        etcd_client, etcd_peer = free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{etcd_client}"
        peer_url = f"http://127.0.0.1:{etcd_peer}"
        self._spawn("etcd", [
            self.binaries["ETCD"],
            "--name=tasksync-test",
            f"--data-dir={self.state_dir / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=tasksync-test={peer_url}",
        ])
        self._spawn("kube-apiserver", [
            self.binaries["KUBE_APISERVER"],
            f"--etcd-servers={etcd_url}",
            f"--bind-address={node_ip}",
            f"--advertise-address={node_ip}",
            f"--secure-port={server.rsplit(':', 1)[1]}",
            f"--cert-dir={self.state_dir / 'apiserver'}",
            f"--tls-cert-file={serving.cert}",
            f"--tls-private-key-file={serving.key}",
            f"--client-ca-file={pki.ca.cert}",
            f"--kubelet-client-certificate={kubelet_client.cert}",
            f"--kubelet-client-key={kubelet_client.key}",
            "--kubelet-preferred-address-types=InternalIP",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={service_accounts.cert}",
            f"--service-account-signing-key-file={service_accounts.key}",
            f"--service-cluster-ip-range={self.network.service_cidr}",
            "--profiling=false",
        ])
        admin_pair = pki.client("admin", ADMIN)
        self.admin_kubeconfig = pki.kubeconfig("admin", server, ADMIN)
        self.api = KubeApi(server, str(pki.ca.cert), admin_pair)
        self._wait(lambda: self.api.text("/readyz") == "ok", 120, "kube-apiserver /readyz")

        for name, identity, extra in (
            (
                "kube-controller-manager",
                Identity("system:kube-controller-manager"),
                [
                    "--use-service-account-credentials=true",
                    f"--service-account-private-key-file={service_accounts.key}",
                    f"--root-ca-file={pki.ca.cert}",
                    f"--service-cluster-ip-range={self.network.service_cidr}",
                    f"--cluster-signing-cert-file={pki.ca.cert}",
                    f"--cluster-signing-key-file={pki.ca.key}",
                ],
            ),
            ("kube-scheduler", Identity("system:kube-scheduler"), []),
        ):
            kubeconfig = pki.kubeconfig(name, server, identity)
            port = free_port()
            self._spawn(name, [
                self.binaries[name.upper().replace("-", "_")],
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                "--leader-elect=false",
                *extra,
            ])
            self._wait(lambda port=port: _https_ok(f"https://127.0.0.1:{port}/healthz"), 120, f"{name} /healthz")

    def _start_dns(self, pki: ClusterPki, server: str) -> None:
        assert self.api is not None
        identity = Identity("test-cluster-dns")
        self.api.create(
            "/apis/rbac.authorization.k8s.io/v1/clusterroles",
            {"metadata": {"name": "test-cluster-dns"}, "rules": components.DNS_RULES},
        )
        self.api.create(
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            {
                "metadata": {"name": "test-cluster-dns"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "test-cluster-dns"
                },
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": identity.user}],
            },
        )
        ready_port = free_port()
        corefile = components.corefile(
            self.state_dir, self.network, kubeconfig=pki.kubeconfig("dns", server, identity), ready_port=ready_port
        )
        self._spawn("coredns", [self.binaries["COREDNS"], f"-conf={corefile}"])
        self._wait(lambda: _http_ok(f"http://127.0.0.1:{ready_port}/ready"), 120, "CoreDNS /ready")

    def _start_node(self, pki: ClusterPki, server: str) -> None:
        layout = self.layout
        components.cni_conflist(layout, self.network)
        containerd_config = components.containerd_config(
            layout,
            pause_image=self.binaries["PAUSE_IMAGE"],
            cni_bin_dir=self.binaries["CNI_BIN_DIR"],
            runc=self.binaries["RUNC"],
        )
        self._spawn("containerd", [self.binaries["CONTAINERD"], f"--config={containerd_config}"])
        self._wait(lambda: self._ctr("version").returncode == 0, 60, "containerd")
        # Before the kubelet: containerd would try to pull a sandbox image it does not have.
        self.import_image(self.binaries["PAUSE_IMAGE_ARCHIVE"])
        self.import_image(self.binaries["HELLO_IMAGE_ARCHIVE"])

        ports = KubeletPorts(serving=free_port(), healthz=free_port())
        kubelet_config = components.kubelet_config(layout, self.network, ports=ports, client_ca=pki.ca.cert)
        kubelet_kubeconfig = pki.kubeconfig("kubelet", server, Identity(f"system:node:{NODE_NAME}", ("system:nodes",)))
        self._spawn("kubelet", [
            self.binaries["KUBELET"],
            f"--config={kubelet_config}",
            f"--kubeconfig={kubelet_kubeconfig}",
            f"--root-dir={layout.kubelet_dir / 'root'}",
            f"--cert-dir={layout.kubelet_dir / 'certs'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={self.network.node_ip}",
        ])
        self._wait(self._node_ready, 180, f"node {NODE_NAME} Ready")

        proxy_ports = ProxyPorts(healthz=free_port(), metrics=free_port())
        proxy_config = components.kube_proxy_config(
            self.state_dir,
            self.network,
            kubeconfig=pki.kubeconfig("kube-proxy", server, Identity("system:kube-proxy")),
            ports=proxy_ports,
        )
        self._spawn("kube-proxy", [self.binaries["KUBE_PROXY"], f"--config={proxy_config}"])
        self._wait(lambda: _http_ok(f"http://127.0.0.1:{proxy_ports.healthz}/healthz"), 120, "kube-proxy /healthz")

    def _node_ready(self) -> bool:
        assert self.api is not None
        if not self.api.exists(f"/api/v1/nodes/{NODE_NAME}"):
            return False
        conditions = self.api.get(f"/api/v1/nodes/{NODE_NAME}")["status"].get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def _default_service_account_ready(self) -> bool:
        return self.namespace_ready("default")

    def namespace_ready(self, namespace: str) -> bool:
        """Pods can be created in `namespace`: its default ServiceAccount and the CA bundle that
        every pod's projected token volume mounts exist (the controller-manager makes both)."""
        assert self.api is not None
        return self.api.exists(f"/api/v1/namespaces/{namespace}/serviceaccounts/default") and self.api.exists(
            f"/api/v1/namespaces/{namespace}/configmaps/kube-root-ca.crt"
        )

    def container_process(self, pod: dict[str, Any], container: str) -> ContainerProcess:
        """The running process of one container of a pod on this node."""
        status = next(s for s in pod["status"]["containerStatuses"] if s["name"] == container)
        return container_process(status["containerID"].split("://", 1)[1])

    def import_image(self, archive: str | Path) -> None:
        """Load an OCI or docker archive into the node's image store (the CRI's namespace)."""
        result = self._ctr("images", "import", str(archive))
        if result.returncode != 0:
            raise ClusterFailed(f"importing {archive} failed:\n{result.stderr}")

    def _ctr(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.binaries["CTR"], f"--address={self.layout.containerd_socket}", "--namespace=k8s.io", *args],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    def _spawn(self, name: str, argv: list[str]) -> None:
        with open(self.logs_dir / f"{name}.log", "wb") as log:
            # A session of its own: Ctrl-C on pytest must reach the teardown, not the components.
            self._processes[name] = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )

    def _wait(self, probe: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            for name, process in self._processes.items():
                if process.poll() is not None:
                    raise ClusterFailed(
                        f"{name} exited with {process.returncode} while waiting for {what}:\n{self.logs()}"
                    )
            try:
                if probe():
                    return
            except (httpx.HTTPError, OSError, KeyError) as exc:
                last = exc
            time.sleep(0.2)
        raise ClusterFailed(f"{what}: not within {timeout}s (last: {last!r})\n{self.logs()}")

    def logs(self, tail: int = 30) -> str:
        parts = []
        for log in sorted(self.logs_dir.glob("*.log")):
            lines = log.read_text(errors="replace").splitlines()[-tail:]
            parts.append(f"--- {log.name} ---\n" + "\n".join(lines))
        return "\n".join(parts)

    # -- stopping ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Tear everything down; raise ClusterFailed listing anything left on the machine."""
        left: list[str] = []
        try:
            # Nothing may recreate or reschedule pods while they are being deleted.
            self._terminate("kube-controller-manager", "kube-scheduler")
            if self.api is not None and self._running("kube-apiserver") and self._running("kubelet"):
                left += self._delete_all_pods()
            proxy_started = "kube-proxy" in self._processes
            self._terminate("kube-proxy", "kubelet")
            if proxy_started:
                # kube-proxy leaves its rules in place when it exits (so a restart does not
                # interrupt Services); --cleanup removes them.
                subprocess.run(
                    [self.binaries["KUBE_PROXY"], "--cleanup"], capture_output=True, timeout=60, check=False
                )
            if self._running("containerd"):
                self._remove_containers()
            self._terminate("containerd", "coredns", "kube-apiserver", "etcd")
        finally:
            if self.api is not None:
                self.api.close()
            if self._host is not None:
                left += self._host.restore()
                self._host.release()
        if left:
            raise ClusterFailed("the cluster left behind:\n" + "\n".join(left))

    def _running(self, name: str) -> bool:
        process = self._processes.get(name)
        return process is not None and process.poll() is None

    def _delete_all_pods(self) -> list[str]:
        """Delete every pod and wait for the kubelet to stop its containers and sandbox (it
        removes the object then); return the pods it did not finish, which the host cleanup
        kills and the teardown reports."""
        assert self.api is not None
        for namespace in self.api.items("/api/v1/namespaces"):
            self.api.delete(f"/api/v1/namespaces/{namespace['metadata']['name']}/pods")
        try:
            self._wait(lambda: not self.api.items("/api/v1/pods"), 120, "every pod deleted by the kubelet")
        except ClusterFailed:
            return [f"pod {p['metadata']['namespace']}/{p['metadata']['name']} not stopped by the kubelet"
                    for p in self.api.items("/api/v1/pods")]
        return []

    def _remove_containers(self) -> None:
        """Stop and delete what the kubelet left in containerd (the stopped pod sandboxes) so
        that their shims exit now rather than being killed."""
        for task in self._ctr("tasks", "list", "--quiet").stdout.split():
            self._ctr("tasks", "kill", "--signal=SIGKILL", task)
            self._ctr("tasks", "delete", "--force", task)
        containers = self._ctr("containers", "list", "--quiet").stdout.split()
        if containers:
            self._ctr("containers", "delete", *containers)

    def _terminate(self, *names: str) -> None:
        """Stop these components; the others are still expected to run (`_wait` checks them)."""
        for name in names:
            process = self._processes.pop(name, None)
            if process is None or process.poll() is not None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _https_ok(url: str) -> bool:
    # The components serve /healthz with a certificate they made up themselves.
    return httpx.get(url, verify=False, timeout=5).status_code == 200


def _http_ok(url: str) -> bool:
    return httpx.get(url, timeout=5).status_code == 200

