"""`tasksync serve` as a developer meets it: one log format with the address last, a port in
use as one line, and development mode stopping at once."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import sys
import time

import httpx

from tasksync.client import SyncClient

CLI = [sys.executable, "-m", "tasksync.cli"]
LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")


def test_every_line_has_one_format_and_the_address_comes_last(dev_service):
    httpx.get(dev_service.http + "/health")
    lines = dev_service.log().splitlines()
    assert lines and all(LOG_LINE.match(line) for line in lines), "\n".join(lines)
    address = next(i for i, line in enumerate(lines) if f"http://127.0.0.1:{dev_service.port}/?user_id=alice" in line)
    assert any("Application startup complete" in line for line in lines[:address])
    # Nothing of the startup after it: only the requests that came once it listened.
    assert all("uvicorn.access" in line for line in lines[address + 1:]), "\n".join(lines[address:])


def test_a_port_in_use_is_one_line_saying_how_to_pick_another(tmp_path):
    database = tmp_path / "demo.sqlite3"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [*CLI, "serve", "--dev", "--port", str(port), "--demo-db", str(database)],
            capture_output=True, text=True, timeout=60,
        )
    output = done.stdout + done.stderr
    assert done.returncode == 2 and len(output.splitlines()) == 1, output
    assert f"port {port}" in output and "in use" in output
    assert f"make demo PORT={port + 1}" in output and f"--port {port + 1}" in output
    # Checked before anything starts: not even the demo's database was created.
    assert not database.exists()


async def test_development_mode_stops_at_once_on_sigterm(start_service):
    # A drain would hold the process for 30 s; the deadline below is far under that and far over
    # the few tenths of a second a stop takes, so it cannot pass by a drain or fail by a slow machine.
    service = start_service("--dev", env={"TASKSYNC_DRAIN_WINDOW": "30", "TASKSYNC_DRAIN_GRACE": "60"})
    async with SyncClient(service.ws, user_id="dee") as client:
        started = time.monotonic()
        service.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            code, _ = await client.wait_closed()
        assert service.process.wait(timeout=5) == 0
        assert time.monotonic() - started < 5
    assert code == 1012
    assert "draining" not in service.log() and "Traceback" not in service.log()


def test_ctrl_c_in_development_mode_stops_without_a_traceback(start_service):
    service = start_service("--dev")
    service.process.send_signal(signal.SIGINT)
    assert service.process.wait(timeout=5) == 0
    assert "Traceback" not in service.log() and "KeyboardInterrupt" not in service.log()


def test_outside_development_mode_ctrl_c_ends_quietly(start_service):
    service = start_service("--auth", "jwt", env={"TASKSYNC_JWT_SECRET": "s" * 32})
    service.process.send_signal(signal.SIGINT)
    assert service.process.wait(timeout=20) == 130
    assert "Traceback" not in service.log() and "KeyboardInterrupt" not in service.log()

