"""The `tasksync` command against a real service: publish, tail, TLS."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys

import msgspec

from tasksync.client import SyncClient
from tests.service.test_delivery import next_update
from tests.support.servers import ServiceProcess
from tests.support.tls import self_signed
from tests.support.waiting import eventually

CLI = [sys.executable, "-m", "tasksync.cli"]


async def test_publish_command_sends_an_event_that_reaches_the_user(dev_service):
    async with SyncClient(dev_service.ws, user_id="sam") as sam:
        done = await asyncio.to_thread(
            subprocess.run,
            [*CLI, "publish", "task.completed", "--user-id", "sam", "--task", '{"id": 9, "title": "ship"}',
             "--id", "evt-cli", "--url", dev_service.http],
            capture_output=True, text=True, timeout=30,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "evt-cli"
        update = await next_update(sam)
        assert (update.id, update.event, update.task) == ("evt-cli", "task.completed", {"id": 9, "title": "ship"})


def test_publish_command_reports_a_refusal(start_service):
    service = start_service("--dev", env={"TASKSYNC_API_KEYS": "k"})
    done = subprocess.run(
        [*CLI, "publish", "task.created", "--user-id", "u", "--task", "{}", "--url", service.http],
        capture_output=True, text=True, timeout=30,
    )
    assert done.returncode == 1 and "401" in done.stderr


async def test_tail_prints_connected_then_each_frame(dev_service):
    tail = await asyncio.create_subprocess_exec(
        *CLI, "tail", "--url", dev_service.ws, "--user-id", "tia", "--no-reconnect",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(15):
            first = msgspec.json.decode(await tail.stdout.readline())
            assert first["type"] == "connected" and first["user_id"] == "tia"
            done = await asyncio.to_thread(
                subprocess.run,
                [*CLI, "publish", "task.created", "--user-id", "tia", "--task", '{"id": 1}', "--url", dev_service.http],
                capture_output=True, timeout=30,
            )
            assert done.returncode == 0
            while (frame := msgspec.json.decode(await tail.stdout.readline()))["type"] != "task_update":
                assert frame["type"] == "ping"
            assert frame["task"] == {"id": 1} and frame["seq"] == 1
    finally:
        tail.terminate()
        await tail.wait()


async def test_serve_terminates_tls_for_wss(tmp_path):
    cert, key = self_signed(tmp_path)
    service = ServiceProcess(args=["--dev", "--tls-certfile", str(cert), "--tls-keyfile", str(key)])
    service.start(wait_ready=False)
    try:
        context = ssl.create_default_context(cafile=str(cert))
        url = f"wss://127.0.0.1:{service.port}/ws?user_id=uma"

        async def handshake() -> bool:
            try:
                from websockets.asyncio.client import connect

                async with connect(url, ssl=context) as ws:
                    return msgspec.json.decode(await ws.recv())["type"] == "connected"
            except OSError:
                return False

        assert await eventually(handshake, timeout=30, what="a wss:// handshake")
    finally:
        service.stop()


def test_serve_rejects_a_bad_setting_with_a_clear_message():
    done = subprocess.run([*CLI, "serve", "--port", "99999"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "port" in done.stderr
