"""`tasksync serve` listens before it loads the application (listener.py): a client that
reconnects while a restarted server is still starting waits in the kernel's accept queue and
is answered once the server is up, instead of being refused into its backoff."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.servers import free_port
from tests.support.waiting import eventually

# `tasksync serve`, held at the import of the application (tasksync.server) until the test
# writes to the gate, a named pipe (opening one to read waits for a writer): a start that takes
# as long as the test needs, at the point where it takes its time.
GATED_SERVE = """
import importlib.abc, sys
gate = sys.argv.pop(1)

class HoldTheApplication(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "tasksync.server":
            with open(gate, "rb") as held:
                held.read(1)
        return None

sys.meta_path.insert(0, HoldTheApplication())
from tasksync.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _open_the_gate(gate: Path) -> bool:
    """Let the held start go on; False while it has not reached the gate (nobody reads it)."""
    try:
        fd = os.open(gate, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:  # ENXIO: no reader yet
        return False
    os.write(fd, b"1")
    os.close(fd)
    return True


UPGRADE = (
    "GET /ws?user_id=early HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def _gated_serve(port: int, gate: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKSYNC_")}
    with log.open("wb") as output:
        return subprocess.Popen(
            [sys.executable, "-c", GATED_SERVE, str(gate), "serve", "--dev", "--port", str(port)],
            stdout=output, stderr=subprocess.STDOUT, env=env,
        )


async def _accepts_connections(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True


async def test_a_client_connecting_while_the_server_starts_is_answered_once_it_has(tmp_path: Path) -> None:
    port, gate = free_port(), tmp_path / "gate"
    os.mkfifo(gate)
    process = _gated_serve(port, gate, tmp_path / "serve.log")
    try:
        await eventually(lambda: _accepts_connections(port), timeout=30, what="the port to accept connections")
        # The whole upgrade request is sent while the application is still held.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(UPGRADE.encode())
        await writer.drain()
        assert process.poll() is None
        await eventually(lambda: _open_the_gate(gate), timeout=30, what="the start to wait at the gate")
        async with asyncio.timeout(30):
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101 "), head
            # The `connected` frame: unmasked text, its payload under 64 KiB.
            opcode, length = await reader.readexactly(2)
            if length == 126:
                length = int.from_bytes(await reader.readexactly(2), "big")
            frame = json.loads(await reader.readexactly(length))
        assert opcode == 0x81 and frame["type"] == "connected" and frame["user_id"] == "early"
        writer.close()
    finally:
        process.kill()
        process.wait()


# `tasksync serve` stopped where it would import the application, just after it listens: which
# modules it had imported by then.
IMPORTED_AT_LISTEN = """
import importlib.abc, json, sys

class StopAtTheApplication(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "tasksync.server":
            print(json.dumps(sorted(sys.modules)), flush=True)
            import os
            os._exit(0)
        return None

sys.meta_path.insert(0, StopAtTheApplication())
from tasksync.cli import main
main(sys.argv[1:])
"""

# What a server does not need in order to listen, each tens of milliseconds to import: every one
# imported before the listen keeps a restarting server's clients refused that much longer.
NOT_NEEDED_TO_LISTEN = ("asyncio", "websockets", "litestar", "uvicorn", "importlib.metadata", "tasksync.client")


def test_serve_listens_before_importing_what_the_listen_does_not_need() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKSYNC_")}
    argv = [sys.executable, "-c", IMPORTED_AT_LISTEN, "serve", "--dev", "--port", str(free_port())]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    imported = json.loads(done.stdout.splitlines()[-1])
    assert "tasksync.listener" in imported
    early = [name for name in imported if name.split(".")[0] in NOT_NEEDED_TO_LISTEN or name in NOT_NEEDED_TO_LISTEN]
    assert early == [], early
