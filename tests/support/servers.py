"""Start the real TaskSync service (uvicorn in a subprocess) on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .waiting import wait_until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServiceProcess:
    """A `tasksync serve` process. Its log is kept in a file so a failing test can show it."""

    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self, *, wait_ready: bool = True) -> ServiceProcess:
        handle, name = tempfile.mkstemp(prefix="tasksync-", suffix=".log")
        os.close(handle)
        self.log_path = Path(name)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TASKSYNC_")}
        # Tests that leave sockets open should not wait out the 10 s production drain window.
        env["TASKSYNC_DRAIN_WINDOW"] = "1"
        env.update(self.env)
        cmd = [sys.executable, "-m", "tasksync.cli", "serve", "--port", str(self.port), *self.args]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        if wait_ready:
            wait_until(self._healthy, timeout=30, what=f"tasksync on port {self.port} (log: {self.log_path})")
        return self

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"tasksync exited with {self.process.returncode}:\n{self.log()}")
        try:
            return httpx.get(self.http + "/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            # Shown with the test's output if it fails: a service that ignores SIGTERM is a bug.
            print(f"tasksync on port {self.port} did not exit {timeout}s after signal {sig}; killed")
            return self.process.wait(5)
