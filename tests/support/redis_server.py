"""A real redis-server (Debian's package) on a free loopback port, with its own data directory.

Persistence is on by default (AOF, fsync always) so a stop and start keeps offsets and history,
the way TaskSync's docs ask production Redis to be run. `persistent=False` runs it with no
persistence at all, so a restart comes back empty, as a cache-only Redis would; unless a test
takes a snapshot (SAVE), which a restart then loads: Redis is back as it was at the SAVE.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import redis

from .processes import start_until_ready, stop_process
from .servers import free_port


@dataclass
class RedisServer:
    port: int = field(default_factory=free_port)
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="tasksync-redis-")))
    process: subprocess.Popen[bytes] | None = None
    persistent: bool = True

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed: run scripts/ensure-test-deps.sh"
        self.process = start_until_ready(
            [
                binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.directory),
                *(("--appendonly", "yes", "--appendfsync", "always") if self.persistent else ("--appendonly", "no")),
                "--save", "",
                "--protected-mode", "no",
            ],
            name=f"redis-server on port {self.port}",
            ready=self.ping,
            log_path=self.directory / "redis-server.log",
            timeout=15,
        )
        return self

    def ping(self) -> bool:
        try:
            return redis.Redis(port=self.port, socket_timeout=0.5).ping()
        except redis.ConnectionError:
            return False

    def restart(self) -> RedisServer:
        """Start again on the same port and data directory, as a restarted pod would (empty
        without persistence)."""
        return self.start()

    def stop(self) -> None:
        stop_process(self.process, name=f"redis-server on port {self.port}", timeout=10)

    def kill(self) -> None:
        stop_process(self.process, name=f"redis-server on port {self.port}", sig=signal.SIGKILL, timeout=10)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
