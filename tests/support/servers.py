"""Start the real TaskSync service (uvicorn in a subprocess) on a free loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from tasksync.server import uvicorn_config
from tasksync.service import Service
from tasksync.settings import Settings

from .processes import read_log, start_until_ready, stop_process
from .waiting import eventually


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
        self.process = start_until_ready(
            cmd,
            name=f"tasksync on port {self.port}",
            ready=self._healthy if wait_ready else None,
            log_path=self.log_path,
            timeout=30,
            env=env,
        )
        return self

    def _healthy(self) -> bool:
        try:
            return httpx.get(self.http + "/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def log(self) -> str:
        return read_log(self.log_path)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int | None:
        return stop_process(self.process, name=f"tasksync on port {self.port}", sig=sig, timeout=timeout)


@contextlib.asynccontextmanager
async def in_process_server(
    uvicorn_overrides: dict[str, Any] | None = None, **settings: Any
) -> AsyncIterator[tuple[Service, uvicorn.Server]]:
    """A development-mode service under uvicorn in this test's own event loop, for tests that
    look inside it (its objects, its metrics); `server.config.port` is where it listens."""
    port = free_port()
    service = Service(Settings(dev=True, host="127.0.0.1", port=port, log_level="warning", **settings))
    server = uvicorn.Server(uvicorn_config(service, **(uvicorn_overrides or {})))
    serving = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: server.started, what="uvicorn listening")
        yield service, server
    finally:
        server.should_exit = True
        await serving
