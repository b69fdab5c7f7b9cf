"""The configuration files of the node's components: containerd, the CNI network, the kubelet
and kube-proxy. Every path they name is under the run's state directory, every port they open
is a free one on loopback or the node address."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.cluster.host import PodNetwork

NODE_NAME = "tasksync-node"
CLUSTER_DOMAIN = "cluster.local"
# The name the conflist gives the pod network (host-local keeps its leases under it).
NETWORK_NAME = "tasksync-pods"


@dataclass(frozen=True)
class NodeLayout:
    """Where each component of the node keeps its files."""

    state_dir: Path

    @property
    def containerd_dir(self) -> Path:
        return self.state_dir / "containerd"

    @property
    def containerd_socket(self) -> Path:
        return self.containerd_dir / "containerd.sock"

    @property
    def cni_conf_dir(self) -> Path:
        return self.state_dir / "cni" / "net.d"

    @property
    def kubelet_dir(self) -> Path:
        return self.state_dir / "kubelet"

    @property
    def pod_logs_dir(self) -> Path:
        return self.state_dir / "pod-logs"


def containerd_config(layout: NodeLayout, *, pause_image: str, cni_bin_dir: str, runc: str) -> Path:
    base = layout.containerd_dir
    cri = {
        "sandbox_image": pause_image,
        # These machines take CAP_SYS_RESOURCE from every process, root included, so runc
        # cannot give a sandbox the oomScoreAdj of -998 the CRI asks for, and every pod fails
        # with "can't get final child's PID from pipe: EOF". Restricted, containerd clamps each
        # container's score to its own (0): Guaranteed pods score like BestEffort ones.
        "restrict_oom_score_adj": True,
        # Network namespaces as files under our state directory, not /var/run/netns.
        "netns_mounts_under_state_dir": True,
        "stream_server_address": "127.0.0.1",
        "stream_server_port": "0",
        "enable_selinux": False,
        "containerd": {
            "snapshotter": "overlayfs",
            "default_runtime_name": "runc",
            "runtimes": {
                "runc": {
                    "runtime_type": "io.containerd.runc.v2",
                    "options": {
                        # The kubelet runs with the cgroupfs driver: there is no systemd here.
                        "SystemdCgroup": False,
                        "BinaryName": runc,
                        "Root": str(base / "runc"),
                    },
                }
            },
        },
        "cni": {"bin_dir": cni_bin_dir, "conf_dir": str(layout.cni_conf_dir), "max_conf_num": 1},
    }
    config = {
        "version": 2,
        "root": str(base / "root"),
        "state": str(base / "state"),
        # Plugins that would write outside the state directory (opt: /opt/containerd) or that
        # probe for storage these machines do not have.
        "disabled_plugins": [
            "io.containerd.internal.v1.opt",
            "io.containerd.snapshotter.v1.aufs",
            "io.containerd.snapshotter.v1.btrfs",
            "io.containerd.snapshotter.v1.devmapper",
            "io.containerd.snapshotter.v1.zfs",
            "io.containerd.tracing.processor.v1.otlp",
            "io.containerd.internal.v1.tracing",
        ],
        "grpc": {"address": str(layout.containerd_socket)},
        "plugins": {"io.containerd.grpc.v1.cri": cri},
    }
    path = base / "config.toml"
    base.mkdir(parents=True, exist_ok=True)
    path.write_text(_toml(config))
    return path


def _toml(table: dict[str, object], prefix: str = "") -> str:
    """TOML for containerd's config: scalars and lists first, then nested tables."""
    lines, nested = [], []
    for key, value in table.items():
        if isinstance(value, dict):
            nested.append((key, value))
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    text = "\n".join(lines) + "\n"
    for key, value in nested:
        name = f'{prefix}.{json.dumps(key) if "." in key else key}' if prefix else key
        text += f"\n[{name}]\n" + _toml(value, name)
    return text


def cni_conflist(layout: NodeLayout, network: PodNetwork) -> Path:
    """The pod network: one bridge at the node address, addresses from host-local.

    No masquerade (pods never talk to anything outside the machine), no loopback entry: the
    CRI runs the loopback plugin itself for every pod's `lo`. portmap is there for hostPorts.
    """
    conflist = {
        "cniVersion": "1.0.0",
        "name": NETWORK_NAME,
        "plugins": [
            {
                "type": "bridge",
                "bridge": network.bridge,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": network.pod_cidr, "gateway": network.node_ip}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(layout.state_dir / "cni" / "leases"),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    layout.cni_conf_dir.mkdir(parents=True, exist_ok=True)
    path = layout.cni_conf_dir / "10-tasksync.conflist"
    path.write_text(json.dumps(conflist, indent=2))
    return path


@dataclass(frozen=True)
class KubeletPorts:
    serving: int
    healthz: int


def kubelet_config(layout: NodeLayout, network: PodNetwork, *, ports: KubeletPorts, client_ca: Path) -> Path:
    # The cluster's DNS (CoreDNS on the node address) is the pods' only nameserver: the host's
    # resolv.conf, which pods would inherit, names a resolver outside this machine.
    resolv_conf = layout.state_dir / "resolv.conf"
    resolv_conf.write_text("")
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": network.node_ip,
        "port": ports.serving,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": ports.healthz,
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        # No systemd on these machines, cgroup v1 only, no swap accounting to insist on.
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        # A test node reserves nothing and enforces no allocatable cgroup of its own.
        "enforceNodeAllocatable": [],
        "podLogsDir": str(layout.pod_logs_dir),
        "volumePluginDir": str(layout.kubelet_dir / "volume-plugins"),
        "resolvConf": str(resolv_conf),
        "clusterDomain": CLUSTER_DOMAIN,
        "clusterDNS": [network.node_ip],
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(client_ca)},
        },
        "authorization": {"mode": "Webhook"},
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        # The disk is shared with other work: its fill level must neither evict the test pods
        # nor garbage-collect the images imported for them (they are never pulled).
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
    }
    layout.kubelet_dir.mkdir(parents=True, exist_ok=True)
    path = layout.kubelet_dir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass(frozen=True)
class ProxyPorts:
    healthz: int
    metrics: int


def kube_proxy_config(state_dir: Path, network: PodNetwork, *, kubeconfig: Path, ports: ProxyPorts) -> Path:
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "bindAddress": network.node_ip,
        "clusterCIDR": network.pod_cidr,
        "healthzBindAddress": f"127.0.0.1:{ports.healthz}",
        "metricsBindAddress": f"127.0.0.1:{ports.metrics}",
        # NodePorts answer on loopback and the node address only, never on eth0.
        "nodePortAddresses": ["127.0.0.0/8", f"{network.node_ip}/32"],
        "iptables": {"localhostNodePorts": True, "minSyncPeriod": "0s", "syncPeriod": "30s"},
        # Zeros leave the machine's conntrack sysctls as they are.
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
    }
    path = state_dir / "kube-proxy.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# The ClusterRole CoreDNS's kubernetes plugin needs (the rules of CoreDNS's own deployment).
DNS_RULES = [
    {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"], "verbs": ["list", "watch"]},
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
]


def corefile(state_dir: Path, network: PodNetwork, *, kubeconfig: Path, ready_port: int) -> Path:
    """The cluster's DNS: Service and pod names from the API, on the node address only, and no
    forwarding, so a name outside the cluster fails here instead of leaving the machine."""
    path = state_dir / "Corefile"
    path.write_text(
        f""".:53 {{
    bind {network.node_ip}
    ready 127.0.0.1:{ready_port}
    errors
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
    }}
}}
"""
    )
    return path
