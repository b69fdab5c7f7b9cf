"""`tasksync serve` as a developer meets it: one log format with the address last, a port in
use as one line, and development mode stopping at once."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tasksync.client import SyncClient
from tests.support.servers import free_port
from tests.support.waiting import eventually

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


async def test_development_mode_stops_at_once_on_sigterm(tmp_path):
    port = free_port()
    process = _serve_as_make_demo_does(port, tmp_path / "serve.log")
    try:
        await eventually(lambda: _healthy(port), timeout=30, what="tasksync serve --dev")
        async with SyncClient(f"ws://127.0.0.1:{port}/ws", user_id="dee") as client:
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(10):
                code, _ = await client.wait_closed()
            exit_code = await asyncio.to_thread(process.wait, 10)
            # The production drain would take its 10 s window; this deadline is far under that and
            # far over the few tenths of a second a stop takes.
            assert time.monotonic() - started < 5
    finally:
        process.kill()
        process.wait()
    output = (tmp_path / "serve.log").read_text()
    assert (exit_code, code) == (0, 1012), output
    assert "Traceback" not in output


def _serve_as_make_demo_does(port: int, log: Path) -> subprocess.Popen[bytes]:
    """`tasksync serve --dev` as `make demo` starts it: without the drain window ServiceProcess sets."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKSYNC_")}
    with log.open("wb") as output:
        return subprocess.Popen(
            [*CLI, "serve", "--dev", "--port", str(port)], stdout=output, stderr=subprocess.STDOUT, env=env
        )


async def _healthy(port: int) -> bool:
    try:
        async with httpx.AsyncClient() as http:
            return (await http.get(f"http://127.0.0.1:{port}/health", timeout=1)).status_code == 200
    except httpx.HTTPError:
        return False


def test_ctrl_c_stops_without_a_traceback(start_service):
    service = start_service("--dev")
    service.process.send_signal(signal.SIGINT)
    assert service.process.wait(timeout=10) == 130
    assert "Traceback" not in service.log() and "KeyboardInterrupt" not in service.log()
