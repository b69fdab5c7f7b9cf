"""The processes a benchmark run owns: servers, the load generator, Redis, a Redis Cluster; and
what the orchestrator reads about them from /proc (CPU time, resident memory) and about the
machine (load average).

Every child is stopped by the run that started it, by its own pid; a child with a control pipe
also exits on its own when the orchestrator dies, because its stdin reaches end-of-file.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from . import redis_cluster

REPO = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class ChildFailed(RuntimeError):
    """A child exited, or did not answer in time; the message carries the end of its log."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def loadavg() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def cpu_seconds_of(pid: int) -> float:
    """User plus system CPU time of a process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        # The command name may contain spaces; the fields after its closing parenthesis do not.
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes_of(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_SIZE


def raise_file_limit() -> None:
    """Children inherit the orchestrator's limit; a server holding 10,000 sockets needs it raised."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for wanted in (max(65536, hard), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return
        except (ValueError, OSError):
            continue


class Child:
    """One process. With `control`, its stdin and stdout carry JSON lines (see `request`)."""

    def __init__(
        self, name: str, argv: list[str], log_dir: Path, *, env: dict[str, str] | None = None, control: bool = False
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = env or {}
        self.control = control
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._buffer = b""

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> Child:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TASKSYNC_")}
        env["PYTHONPATH"] = python_path()
        env.update(self.env)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                cwd=REPO,
                env=env,
                stdin=subprocess.PIPE if self.control else subprocess.DEVNULL,
                stdout=subprocess.PIPE if self.control else log,
                stderr=log,
            )
        return self

    def request(self, command: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
        """Send one command and wait for its one-line answer."""
        assert self.process is not None and self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(command).encode() + b"\n")
        self.process.stdin.flush()
        deadline = time.monotonic() + timeout
        fd = self.process.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ChildFailed(f"{self.name} did not answer {command['cmd']!r} within {timeout:g}s{self._tail()}")
            ready, _, _ = select.select([fd], [], [], min(remaining, 1.0))
            if ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise ChildFailed(f"{self.name} exited while answering {command['cmd']!r}{self._tail()}")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        reply = json.loads(line)
        if "error" in reply:
            raise ChildFailed(f"{self.name}: {command['cmd']!r} failed: {reply['error']}")
        return reply

    def wait_for_port(self, port: int, timeout: float = 60) -> Child:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise ChildFailed(f"{self.name} exited with {self.process.returncode}{self._tail()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise ChildFailed(f"{self.name} did not listen on port {port} within {timeout:g}s{self._tail()}")

    def cpu_seconds(self) -> float:
        return cpu_seconds_of(self.pid)

    def rss_bytes(self) -> int:
        return rss_bytes_of(self.pid)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        if self.control and self.process.stdin is not None:
            # End-of-file is the polite way to stop a controlled child; the signal follows if needed.
            with contextlib.suppress(BrokenPipeError):
                self.process.stdin.close()
        else:
            self.process.send_signal(sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def _tail(self) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return f"\n--- end of {self.log_path} ---\n{text[-3000:]}" if text else ""


def python_path() -> str:
    """The PYTHONPATH of a process the harness starts. An inherited PYTHONPATH comes after the
    repository: pointing it at another tree's service/ measures that tree's tasksync (a proposed
    change) with this harness."""
    return os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


class Redis(Child):
    """A redis-server of this run, with append-only persistence fsynced every second (what
    docs/delivery.md recommends short of `always`), in a throwaway directory."""

    def __init__(self, log_dir: Path, data_dir: Path) -> None:
        self.port = free_port()
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        data_dir.mkdir(parents=True, exist_ok=True)
        super().__init__(
            f"redis-{self.port}",
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(data_dir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
                "--protected-mode",
                "no",
                "--maxclients",
                "20000",
            ],
            log_dir,
        )

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> Redis:
        super().start()
        self.wait_for_port(self.port)
        return self


class RedisCluster(redis_cluster.RedisCluster):
    """A Redis Cluster of this run (bench/redis_cluster.py; workload 6 starts one without replicas), in a
    throwaway directory that keeps each node's log. Started and stopped like a child; its CPU
    time is all of its nodes'."""

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds_of(pid) for pid in self.pids())


class CpuSampler:
    """Peak CPU of a set of processes over short windows, sampled from a background thread;
    `pids` is re-read every sample, so a restarted server is followed."""

    def __init__(self, pids, interval: float = 0.5) -> None:
        self.pids = pids
        self.interval = interval
        self.peak_cores = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        last: dict[int, float] = {}
        stamp = time.monotonic()
        while not self._stop.wait(self.interval):
            now = time.monotonic()
            used = 0.0
            current: dict[int, float] = {}
            for pid in self.pids():
                try:
                    current[pid] = cpu_seconds_of(pid)
                except OSError:
                    continue
                used += current[pid] - last.get(pid, current[pid])
            last, elapsed, stamp = current, now - stamp, now
            self.peak_cores = max(self.peak_cores, used / elapsed)
