"""A Redis Cluster of Debian's redis-server processes on loopback ports: masters with one replica
each, created with `redis-cli --cluster create`. The tests (tests/support/redis_cluster.py) and
the benchmarks (`procs.RedisCluster`) both start theirs with this one piece of code.

Every node runs in a directory of its own (cluster config, append-only file, log). `start`
returns once every node sees the same healthy cluster; `kill_master` crashes a master the way a
lost machine would, and `wait_for_failover` returns once its replica serves its slots.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import redis.cluster
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

HOST = "127.0.0.1"


class ClusterFailed(RuntimeError):
    """A node exited, or the cluster did not reach the state waited for; the message carries
    what was last wrong and the end of each node's log."""


# Starts on fresh ports when a node finds one of its ports taken (see `start`).
PORT_ATTEMPTS = 3


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports. Each stays bound until all are picked: picked one
    at a time and released, the kernel may hand the same port out twice, and two nodes of one
    cluster then collide."""
    with contextlib.ExitStack() as held:
        sockets = [held.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]


@dataclass(frozen=True)
class Master:
    """A master as the cluster sees it: its port, the slot ranges it serves (inclusive, as
    CLUSTER NODES lists them) and the ports of its replicas."""

    port: int
    slots: tuple[tuple[int, int], ...]
    replicas: tuple[int, ...]

    def owns(self, slot: int) -> bool:
        return any(first <= slot <= last for first, last in self.slots)


@dataclass
class Node:
    port: int
    directory: Path
    # The cluster bus port is chosen free too: the default (port + 10000) may be taken or beyond 65535.
    bus_port: int
    process: subprocess.Popen[bytes] | None = None
    # Killed on purpose (`kill_master`): its exit is what a test asked for, not a failure.
    killed: bool = False

    @property
    def log_path(self) -> Path:
        return self.directory / "redis-server.log"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def found_its_port_taken(self) -> bool:
        """Exited because another process bound one of its ports after they were picked."""
        try:
            return not self.alive and "Address already in use" in self.log_path.read_text(errors="replace")
        except OSError:
            return False

    def client(self) -> redis.Redis:
        return redis.Redis(host=HOST, port=self.port, socket_timeout=2, decode_responses=True)

    def log_tail(self) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return f"\n--- end of {self.log_path} ---\n{text[-1500:]}" if text else ""


@dataclass
class RedisCluster:
    """`masters_count` masters with `replicas_per_master` replicas each, in `directory` (created
    if missing)."""

    directory: Path
    masters_count: int = 3
    replicas_per_master: int = 1
    # How long a node may be silent before the others count it as failed: short enough for a
    # failover in a few seconds, long enough that a busy two-core machine does not fail a live one.
    node_timeout_ms: int = 1500
    nodes: list[Node] = field(default_factory=list, init=False)

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """Every node created, dead or alive: a client tries them in turn."""
        return [(HOST, node.port) for node in self.nodes]

    @property
    def url(self) -> str:
        """The `TASKSYNC_BROKER` value for this cluster."""
        return "redis+cluster://" + ",".join(f"{host}:{port}" for host, port in self.startup_nodes)

    def pids(self) -> list[int]:
        return [node.process.pid for node in self.nodes if node.process is not None and node.alive]

    def start(self, timeout: float = 120) -> RedisCluster:
        """Start the nodes, create the cluster and wait until it is healthy; on any failure every
        node started is stopped before the error is raised."""
        server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if server is None or cli is None:
            raise ClusterFailed("redis-server and redis-cli are needed: run scripts/ensure-test-deps.sh")
        deadline = time.monotonic() + timeout
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            self._launch_all(server, deadline)
            try:
                created = subprocess.run(
                    [
                        cli,
                        "--cluster",
                        "create",
                        *(f"{host}:{port}" for host, port in self.startup_nodes),
                        "--cluster-replicas",
                        str(self.replicas_per_master),
                        "--cluster-yes",
                    ],
                    capture_output=True,
                    text=True,
                    timeout=max(1.0, deadline - time.monotonic()),
                )
            except subprocess.TimeoutExpired as expired:
                raise ClusterFailed(f"timed out waiting for redis-cli --cluster create:\n{expired.stdout!r}") from None
            if created.returncode != 0:
                raise ClusterFailed(f"redis-cli --cluster create failed:\n{created.stdout[-2000:]}{created.stderr}")
            self.wait_until_healthy(deadline - time.monotonic())
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM every node still running, then wait for each (SIGKILL after `timeout`)."""
        running = [node.process for node in self.nodes if node.process is not None and node.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        for process in running:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)

    def start_again(self, timeout: float = 60) -> None:
        """Start every node that is not running (after `stop`, or `kill_master`) again on its port
        and from its directory (nodes.conf, the append-only file), as after a power cut: the
        cluster re-forms with the masters, replicas and data it had. Waits until it is healthy."""
        server = shutil.which("redis-server")
        if server is None:
            raise ClusterFailed("redis-server is needed: run scripts/ensure-test-deps.sh")
        for node in self.nodes:
            if not node.alive:
                node.killed = False
                self._launch(server, node)
        self.wait_until_healthy(timeout)

    def client(self) -> redis.cluster.RedisCluster:
        """A cluster client of redis-py, following MOVED and failovers like TaskSync's."""
        return redis.cluster.RedisCluster(
            startup_nodes=[redis.cluster.ClusterNode(host, port) for host, port in self.startup_nodes],
            decode_responses=True,
        )

    def masters(self) -> list[Master]:
        """The masters serving slots, in slot order: master i keeps its index across a failover."""
        return self._masters(self._view(self._any_live_node()))

    def master_of(self, key: str | bytes) -> Master:
        """The master serving `key`'s slot (its `{hash tag}` counts, as in Redis)."""
        slot = key_slot(key.encode() if isinstance(key, str) else key)
        return next(master for master in self.masters() if master.owns(slot))

    def kill_master(self, index: int) -> Master:
        """SIGKILL master `index`, as a crashed machine: no shutdown, no last write to disk."""
        master = self.masters()[index]
        self._kill(self._node_on(master.port))
        return master

    def kill_replicas(self, master: Master) -> None:
        """SIGKILL `master`'s replicas: with `master` killed too, its slots stay unserved (no
        failover can come) and every node that could serve them refuses connections at once."""
        for port in master.replicas:
            self._kill(self._node_on(port))

    @contextlib.contextmanager
    def replicas_paused(self, master: Master) -> Iterator[None]:
        """SIGSTOP `master`'s replicas, and SIGCONT them on the way out: while they are stopped
        no failover of `master` can happen, so a test can look at a master that is down for as
        long as it needs, without racing its replica's promotion."""
        paused = [self._node_on(port).process for port in master.replicas]
        for process in paused:
            assert process is not None
            process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            for process in paused:
                assert process is not None
                process.send_signal(signal.SIGCONT)

    def wait_for_failover(self, killed: Master, timeout: float = 60) -> Master:
        """Wait until one of `killed`'s replicas serves its slots and the cluster is healthy
        again; return the promoted master."""
        self.wait_until_healthy(timeout)
        promoted = next(master for master in self.masters() if master.owns(killed.slots[0][0]))
        if promoted.port not in killed.replicas:
            raise ClusterFailed(f"slots of master {killed.port} went to {promoted.port}, not to a replica of it")
        return promoted

    def wait_until_healthy(self, timeout: float = 60) -> None:
        """Until every running node reports cluster_state:ok with every slot served, they all see
        the same masters, replicas and slots, and every replica's link to its master is up
        (a replica that has not synchronised could not take over)."""
        self._wait(time.monotonic() + timeout, "a healthy cluster", self._problem)

    # --- internals -----------------------------------------------------------------------------

    def _launch_all(self, server: str, deadline: float) -> None:
        """Start every node on free ports and wait until each answers. The ports are free when
        picked, but another process may bind one before its node does: the nodes then start
        again on new ones, up to PORT_ATTEMPTS times."""
        count = self.masters_count * (1 + self.replicas_per_master)
        for attempt in range(1, PORT_ATTEMPTS + 1):
            ports = free_ports(2 * count)
            self.nodes = [self._node(index, ports[2 * index], ports[2 * index + 1]) for index in range(count)]
            try:
                for node in self.nodes:
                    self._launch(server, node)
                for node in self.nodes:
                    self._wait(deadline, f"node {node.port} to answer", lambda node=node: self._answers(node))
                return
            except ClusterFailed:
                self.stop()
                if attempt == PORT_ATTEMPTS or not any(node.found_its_port_taken for node in self.nodes):
                    raise

    def _node(self, index: int, port: int, bus_port: int) -> Node:
        directory = self.directory / f"node-{index}"
        shutil.rmtree(directory, ignore_errors=True)  # a failed attempt's files
        directory.mkdir(parents=True)
        return Node(port=port, directory=directory, bus_port=bus_port)

    def _launch(self, server: str, node: Node) -> None:
        argv = [
            server,
            "--port", str(node.port),
            "--bind", HOST,
            "--dir", str(node.directory),
            "--cluster-enabled", "yes",
            "--cluster-port", str(node.bus_port),
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(self.node_timeout_ms),
            # A master that is down costs only the users on its slots; the others' keys stay
            # writable (the default refuses every key while any slot is unserved).
            "--cluster-require-full-coverage", "no",
            # Append-only, fsynced every second: what docs/delivery.md recommends short of `always`.
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            # Replicas synchronise at once instead of waiting 5 s for more of them to ask.
            "--repl-diskless-sync-delay", "0",
            "--protected-mode", "no",
            "--maxclients", "20000",
        ]  # fmt: skip
        with open(node.log_path, "ab") as log:
            node.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def _answers(self, node: Node) -> str | None:
        try:
            with node.client() as client:
                client.ping()
        except redis.RedisError as error:
            return f"node {node.port}: {error}"
        return None

    def _kill(self, node: Node) -> None:
        """SIGKILL a node, marked as killed on purpose (its exit is not a failure)."""
        assert node.process is not None
        node.killed = True
        node.process.kill()
        node.process.wait(10)

    def _node_on(self, port: int) -> Node:
        return next(node for node in self.nodes if node.port == port)

    def _any_live_node(self) -> Node:
        live = [node for node in self.nodes if node.alive]
        if not live:
            raise ClusterFailed("no node of the cluster is running")
        return live[0]

    @staticmethod
    def _view(node: Node) -> dict[int, dict[str, Any]]:
        """CLUSTER NODES as `node` sees it, by port."""
        with node.client() as client:
            nodes = client.cluster("NODES")
        return {int(address.rsplit(":", 1)[1]): entry for address, entry in nodes.items()}

    @staticmethod
    def _masters(view: dict[int, dict[str, Any]]) -> list[Master]:
        ids = {entry["node_id"]: port for port, entry in view.items()}
        masters = [
            Master(
                port=port,
                slots=tuple((int(r[0]), int(r[-1])) for r in entry["slots"]),
                replicas=tuple(
                    sorted(ids[other["node_id"]] for other in view.values() if other["master_id"] == entry["node_id"])
                ),
            )
            for port, entry in view.items()
            if "master" in entry["flags"] and entry["slots"]
        ]
        return sorted(masters, key=lambda master: master.slots[0])

    def _problem(self) -> str | None:
        """What keeps the cluster from being healthy, or None."""
        live = [node for node in self.nodes if node.alive]
        views = {}
        try:
            for node in live:
                with node.client() as client:
                    info = client.cluster("INFO")
                if info["cluster_state"] != "ok" or int(info["cluster_slots_ok"]) != REDIS_CLUSTER_HASH_SLOTS:
                    return f"node {node.port}: {info}"
                view = self._view(node)
                views[node.port] = {
                    port: (entry["flags"].replace("myself,", ""), entry["master_id"], tuple(map(tuple, entry["slots"])))
                    for port, entry in view.items()
                    if port in {node.port for node in live}
                }
        except redis.RedisError as error:
            return str(error)
        seen = set(map(frozenset, (view.items() for view in views.values())))
        if len(seen) != 1:
            return f"nodes disagree: {views}"
        view = self._view(live[0])
        masters = self._masters(view)
        if len(masters) != self.masters_count:
            return f"{len(masters)} masters serve slots: {masters}"
        if any(master.port not in views for master in masters):
            return f"a stopped node still serves slots: {masters}"
        for port, entry in view.items():
            if port in views and "slave" in entry["flags"]:
                with self._node_on(port).client() as client:
                    if client.info("replication")["master_link_status"] != "up":
                        return f"replica {port} is not linked to its master yet"
        return None

    def _wait(self, deadline: float, what: str, problem: Callable[[], str | None]) -> None:
        last = None
        while True:
            for node in self.nodes:
                if not node.killed and node.process is not None and node.process.poll() is not None:
                    raise ClusterFailed(f"node {node.port} exited with {node.process.returncode}{node.log_tail()}")
            last = problem()
            if last is None:
                return
            if time.monotonic() > deadline:
                logs = "".join(node.log_tail() for node in self.nodes)
                raise ClusterFailed(f"timed out waiting for {what}; last: {last}{logs}")
            time.sleep(0.1)
