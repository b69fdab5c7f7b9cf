"""What a node changes on the machine it runs on, recorded before the cluster starts and undone
after it stops.

A kubelet, containerd and kube-proxy are not contained in a directory: they add a bridge and
veths, iptables chains, cgroups, mounts and sysctls, and leave processes (containerd's shims, the
containers) that outlive their parent. `HostFootprint` knows each of them:

- `claim()` takes a machine-wide lock (one cluster per machine: the bridge, the pod network and
  kube-proxy's chains are machine-wide names) and first undoes whatever a run that died without
  its teardown left behind (the lock file records its state directory and the machine as it was before).
- `contain()` creates the pod bridge with the node address, and the raw-table rules that keep pod
  traffic inside the machine: a pod may reach other pods, Services and the node, nothing else,
  and nothing from outside may reach a pod.
- `restore()` ends every process that belongs to the run (named by its state directory on its
  command line, or in the pods' cgroups), unmounts what is mounted under the state directory,
  removes the pods' cgroups, the bridge, and every iptables rule and chain the node added, and
  puts the sysctls back. It returns what it could not undo, so the fixture can fail loudly.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOCK_PATH = Path("/run/lock/tasksync-kube-cluster.lock")
CGROUP_ROOT = Path("/sys/fs/cgroup")
# The kubelet (cgroupfs driver, default cgroupRoot) puts every pod under this cgroup.
PODS_CGROUP = "kubepods"
OUR_CHAIN = "TASKSYNC-CLUSTER"
# Chains the node creates: kube-proxy's and the kubelet's (KUBE-*), and ours. Rules and chains
# are removed only when they are new since `claim()` and belong here. The CNI plugins add none:
# the bridge does not masquerade, and portmap only acts for hostPorts, which no test pod uses
# (CNI-* chains on this machine belong to podman's networks and are left alone).
NODE_CHAIN_PREFIXES = ("KUBE-", OUR_CHAIN)

# Directories the kubelet and containerd create at fixed paths, whatever their configuration says
# (device plugins' sockets, the log links, the shims' sockets), deepest first. Those that did
# not exist before the run are removed after it.
CONTAINER_LOG_LINKS = Path("/var/log/containers")
FIXED_DIRS = (
    Path("/var/lib/kubelet/device-plugins"),
    Path("/var/lib/kubelet"),
    CONTAINER_LOG_LINKS,
    Path("/run/containerd/s"),
    Path("/run/containerd"),
)

# Machine-wide sysctls the node sets: the bridge plugin turns on forwarding, kube-proxy lets
# NodePorts answer on 127.0.0.1 (route_localnet), and the kubelet sets its kernel tunables.
SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/route_localnet",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)


@dataclass(frozen=True)
class PodNetwork:
    """The addresses of the cluster: pods on one bridge, the node at the bridge's address.

    Private ranges that collide with nothing configured on these machines (eth0 is 192.0.2.0/24,
    the resolver 10.255.255.53); the API server listens on the node address, which pods reach
    directly and the host reaches through its own routing table.
    """

    bridge: str = "tasksync0"
    pod_cidr: str = "172.31.253.0/24"
    service_cidr: str = "172.31.254.0/24"

    @property
    def node_ip(self) -> str:
        return str(next(ipaddress.ip_network(self.pod_cidr).hosts()))

    @property
    def kubernetes_service_ip(self) -> str:
        """The ClusterIP the API server gives the `kubernetes` Service (the range's first)."""
        return str(next(ipaddress.ip_network(self.service_cidr).hosts()))


def _run(argv: list[str], *, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)


def _iptables_save(family: str) -> list[str]:
    return _run([f"{family}-save"]).stdout.splitlines()


@dataclass
class _Table:
    chains: set[str] = field(default_factory=set)
    rules: list[str] = field(default_factory=list)


def _parse_save(lines: list[str]) -> dict[str, _Table]:
    tables: dict[str, _Table] = {}
    current = _Table()
    for line in lines:
        if line.startswith("*"):
            current = tables.setdefault(line[1:], _Table())
        elif line.startswith(":"):
            current.chains.add(line[1:].split()[0])
        elif line.startswith("-A "):
            current.rules.append(line)
    return tables


def _is_node_chain(chain: str) -> bool:
    return chain.startswith(NODE_CHAIN_PREFIXES)


def _undo_script(before: list[str], now: list[str], network: PodNetwork) -> str:
    """An iptables-restore --noflush script removing what the node added since `before`."""
    old, new = _parse_save(before), _parse_save(now)
    marks = (network.bridge, network.pod_cidr, network.service_cidr)
    script = []
    for table_name, table in new.items():
        previous = old.get(table_name, _Table())
        added_chains = sorted(c for c in table.chains - previous.chains if _is_node_chain(c))
        deletions = []
        for rule in table.rules:
            if rule in previous.rules:
                continue
            words = shlex.split(rule)
            chain = words[1]
            if chain in added_chains:
                continue  # flushed with its chain
            targets = {words[i + 1] for i, word in enumerate(words[:-1]) if word in ("-j", "-g", "--jump", "--goto")}
            if targets & set(added_chains) or any(_is_node_chain(t) for t in targets) or any(m in rule for m in marks):
                deletions.append("-D " + rule[3:])
        if not added_chains and not deletions:
            continue
        script.append(f"*{table_name}")
        script += deletions
        script += [f"-F {chain}" for chain in added_chains]
        script += [f"-X {chain}" for chain in added_chains]
        script.append("COMMIT")
    return "\n".join(script) + "\n" if script else ""


def _read_sysctl(name: str) -> str | None:
    try:
        return (Path("/proc/sys") / name).read_text().strip()
    except OSError:
        return None


def _read_record(descriptor: int) -> dict[str, Any] | None:
    text = os.pread(descriptor, os.fstat(descriptor).st_size, 0).decode()
    return json.loads(text) if text.strip() else None


def _write_record(descriptor: int, record: dict[str, Any] | None) -> None:
    os.ftruncate(descriptor, 0)
    if record is not None:
        os.pwrite(descriptor, json.dumps(record).encode(), 0)
    os.fsync(descriptor)


def _cgroup_paths(pid: int) -> list[str]:
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return []
    return [line.split(":", 2)[2] for line in lines if line.count(":") >= 2]


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def processes_of(state_dir: Path) -> list[int]:
    """Processes of one run: any naming its state directory on its command line (the control
    plane, containerd and its shims, the kubelet, kube-proxy) or living in the pods' cgroups (the
    containers, which a killed shim leaves behind)."""
    prefix = str(state_dir).rstrip("/")
    ours = []
    for pid in _pids():
        if pid == os.getpid():
            continue
        in_pods = any(path.lstrip("/").startswith(PODS_CGROUP + "/") or path == "/" + PODS_CGROUP
                      for path in _cgroup_paths(pid))
        if in_pods or any(arg == prefix or prefix + "/" in arg for arg in _cmdline(pid)):
            ours.append(pid)
    return ours


def mounts_under(state_dir: Path) -> list[str]:
    prefix = str(state_dir).rstrip("/") + "/"
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        # The mount point is the fifth field, with spaces and such written as octal escapes.
        point = line.split()[4].encode().decode("unicode_escape")
        if point.startswith(prefix):
            points.append(point)
    return points


def pod_cgroups() -> list[Path]:
    """Every cgroup directory of the pods, deepest first (the order rmdir needs)."""
    found = []
    for hierarchy in CGROUP_ROOT.iterdir():
        top = hierarchy / PODS_CGROUP
        if top.is_dir():
            found += [Path(root) for root, _, _ in os.walk(top)]
    return sorted(found, key=lambda path: len(path.parts), reverse=True)


@dataclass(frozen=True)
class ContainerProcess:
    """What the kernel says of a container's main process."""

    pid: int
    uid: int
    root_read_only: bool


def container_process(container_id: str) -> ContainerProcess:
    """The main process of a running container, found through the cgroup the kubelet made for
    it (cgroupfs driver: kubepods/<qos class>/pod<uid>/<container id>)."""
    (cgroup,) = (CGROUP_ROOT / "pids" / PODS_CGROUP).rglob(container_id)
    pid = int((cgroup / "cgroup.procs").read_text().split()[0])
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    effective_uid = int(status["Uid"].split()[1])
    # /proc/<pid>/mountinfo lists the mounts as the process sees them; the fifth field is the
    # mount point, the sixth the per-mount options.
    root = next(line.split() for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
                if line.split()[4] == "/")
    return ContainerProcess(pid=pid, uid=effective_uid, root_read_only="ro" in root[5].split(","))


@dataclass
class HostFootprint:
    network: PodNetwork
    state_dir: Path
    _lock: int | None = None
    _iptables: dict[str, list[str]] = field(default_factory=dict)
    _sysctls: dict[str, str] = field(default_factory=dict)
    _new_fixed_dirs: list[str] = field(default_factory=list)

    def claim(self, *, timeout: float) -> None:
        """Take the machine's one cluster slot, cleaning up after a run that died holding it."""
        LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(descriptor)
                    raise TimeoutError(f"another test cluster held {LOCK_PATH} for {timeout}s") from None
                time.sleep(1)
        self._lock = descriptor
        previous = _read_record(descriptor)
        if previous is not None:
            HostFootprint(
                self.network,
                Path(previous["state_dir"]),
                _iptables=previous["iptables"],
                _sysctls=previous["sysctls"],
                _new_fixed_dirs=previous["new_fixed_dirs"],
            ).restore()
        self._remove_bridge()
        self._iptables = {family: _iptables_save(family) for family in ("iptables", "ip6tables")}
        self._sysctls = {name: value for name in SYSCTLS if (value := _read_sysctl(name)) is not None}
        self._new_fixed_dirs = [str(path) for path in FIXED_DIRS if not path.exists()]
        # What to restore if this run dies without its teardown: the next claim() does it.
        _write_record(
            descriptor,
            {
                "state_dir": str(self.state_dir),
                "iptables": self._iptables,
                "sysctls": self._sysctls,
                "new_fixed_dirs": self._new_fixed_dirs,
            },
        )

    def contain(self) -> None:
        """Create the bridge at the node address and the rules that keep pod traffic local."""
        bridge, node = self.network.bridge, self.network.node_ip
        prefix = self.network.pod_cidr.split("/")[1]
        for argv in (
            ["ip", "link", "add", bridge, "type", "bridge"],
            ["ip", "addr", "add", f"{node}/{prefix}", "dev", bridge],
            ["ip", "link", "set", bridge, "up"],
        ):
            subprocess.run(argv, check=True, capture_output=True)
        pods, services = self.network.pod_cidr, self.network.service_cidr
        # The raw table sees packets before any NAT and before kube-proxy's rules, whatever
        # order those are inserted in. Packets the host sends to itself (to the node address,
        # to NodePorts on 127.0.0.1) arrive on lo; a pod's arrive on the bridge, addressed to a
        # pod, the node or a Service; anything else to or from the pods is dropped.
        rules = (
            f"-A {OUR_CHAIN} -i lo -j RETURN",
            f"-A {OUR_CHAIN} -i {bridge} -d {pods} -j RETURN",
            f"-A {OUR_CHAIN} -i {bridge} -d {services} -j RETURN",
            f"-A {OUR_CHAIN} -i {bridge} -m comment --comment pods-stay-local -j DROP",
            f"-A {OUR_CHAIN} -d {pods} -m comment --comment no-way-in -j DROP",
            f"-A {OUR_CHAIN} -d {services} -m comment --comment no-way-in -j DROP",
        )
        script = "\n".join(["*raw", f":{OUR_CHAIN} - [0:0]", *rules, f"-I PREROUTING -j {OUR_CHAIN}", "COMMIT", ""])
        subprocess.run(["iptables-restore", "--noflush"], input=script, text=True, check=True, capture_output=True)

    def _remove_bridge(self) -> None:
        if Path(f"/sys/class/net/{self.network.bridge}").exists():
            _run(["ip", "link", "del", self.network.bridge])

    def restore(self) -> list[str]:
        """Undo everything; return a description of whatever is still left."""
        self._end_processes()
        for point in sorted(mounts_under(self.state_dir), key=len, reverse=True):
            if _run(["umount", point]).returncode != 0:
                _run(["umount", "--lazy", point])
        for path in pod_cgroups():
            with contextlib.suppress(OSError):
                path.rmdir()
        self._remove_bridge()
        for family, before in self._iptables.items():
            script = _undo_script(before, _iptables_save(family), self.network)
            if script:
                _run([f"{family}-restore", "--noflush"], stdin=script)
        for name, value in self._sysctls.items():
            if _read_sysctl(name) != value:
                (Path("/proc/sys") / name).write_text(value)
        for link in self._log_links():
            link.unlink()
        for directory in map(Path, self._new_fixed_dirs):  # deepest first, as FIXED_DIRS lists them
            if not directory.is_dir():
                continue
            # The kubelet leaves its device-plugin socket behind.
            for entry in directory.iterdir():
                if entry.is_socket():
                    entry.unlink()
            with contextlib.suppress(OSError):  # a directory still in use: leftovers() reports it
                directory.rmdir()
        return self.leftovers()

    def _log_links(self) -> list[Path]:
        """The kubelet's links to our containers' logs in /var/log/containers (its container
        garbage collector would remove them later; the kubelet is gone by then)."""
        prefix = str(self.state_dir).rstrip("/") + "/"
        if not CONTAINER_LOG_LINKS.is_dir():
            return []
        return [link for link in CONTAINER_LOG_LINKS.iterdir() if os.readlink(link).startswith(prefix)]

    def _end_processes(self) -> None:
        deadline = time.monotonic() + 20
        while pids := processes_of(self.state_dir):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                return
            time.sleep(0.1)

    def leftovers(self) -> list[str]:
        left = [f"process {pid}: {' '.join(_cmdline(pid))}" for pid in processes_of(self.state_dir)]
        left += [f"mount {point}" for point in mounts_under(self.state_dir)]
        left += [f"cgroup {path}" for path in pod_cgroups()]
        left += [f"log link {link}" for link in self._log_links()]
        left += [f"directory {path}" for path in self._new_fixed_dirs if Path(path).exists()]
        if Path(f"/sys/class/net/{self.network.bridge}").exists():
            left.append(f"interface {self.network.bridge}")
        left += [f"veth {name}" for name in os.listdir("/sys/class/net") if name.startswith("veth")]
        for family, before in self._iptables.items():
            script = _undo_script(before, _iptables_save(family), self.network)
            if script:
                left.append(f"{family} rules:\n{script}")
        left += [
            f"sysctl {name} = {_read_sysctl(name)} (was {value})"
            for name, value in self._sysctls.items()
            if _read_sysctl(name) != value
        ]
        return left

    def release(self) -> None:
        if self._lock is not None:
            _write_record(self._lock, None)
            os.close(self._lock)
            self._lock = None
