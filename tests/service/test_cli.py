"""The `tasksync` command against a real service: publish, tail, TLS, and every expected error
as one line on stderr with a non-zero exit and no traceback."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
from importlib.metadata import version

import msgspec
import pytest

from tasksync.client import SyncClient
from tests.service.test_delivery import next_update
from tests.support.servers import ServiceProcess, free_port
from tests.support.tls import self_signed
from tests.support.waiting import eventually

CLI = [sys.executable, "-m", "tasksync.cli"]
NOT_RUNNING = "is the server running? (make demo)"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60)


def assert_one_line_error(done: subprocess.CompletedProcess[str], exit_code: int, *phrases: str) -> None:
    assert done.returncode == exit_code, done.stderr
    assert done.stdout == "" and "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    for phrase in phrases:
        assert phrase in done.stderr, done.stderr


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
        [*CLI, "publish", "task.created", "--user-id", "u", "--task", '{"id": 1}', "--url", service.http],
        capture_output=True, text=True, timeout=30,
    )
    assert_one_line_error(done, 1, "401")


async def test_tail_prints_connected_then_each_frame(dev_service):
    tail = await asyncio.create_subprocess_exec(
        *CLI, "tail", "--url", dev_service.http, "--user-id", "tia", "--no-reconnect",
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


TASK = '{"id": 1, "title": "x"}'


@pytest.mark.parametrize(
    ("args", "phrases"),
    [
        (["tail"], ["--user-id", "--token"]),
        (["tail", "--user-id", ""], ["--user-id is empty"]),
        (["tail", "--user-id", "ann", "--since", "3"], ["--since and --epoch"]),
        (["tail", "--user-id", "ann", "--epoch", "e1"], ["--since and --epoch"]),
        (["tail", "--user-id", "ann", "--url", "ws://127.0.0.1:8005/ws"], ["base URL", "http://127.0.0.1:8005"]),
        (["publish", "task.created", "--user-id", "", "--task", TASK], ["--user-id is empty"]),
        (["publish", "task.created", "--user-id", "ann", "--task", '{"title": "x"}'], ['"id"']),
        (["publish", "task.created", "--user-id", "ann", "--task", "[1]"], ['"id"']),
        (["publish", "task.created", "--user-id", "ann", "--task", "{oops"], ["not JSON"]),
        (["publish", "task.created", "--user-id", "ann", "--task", TASK, "--url", "127.0.0.1:8005"], ["base URL"]),
        (["publish", "task.created", "--user-id", "ann", "--task", TASK, "--url", "http://h:99999"], ["base URL"]),
        (["publish", "task.created", "--task", TASK], ["--user-id", "--help"]),
    ],
)
def test_a_command_line_to_fix_is_refused_before_anything_is_sent(args, phrases):
    # Refused before any connection: exit 2 whether or not anything listens on the default port.
    assert_one_line_error(run_cli(*args), 2, *phrases)


def test_nothing_listening_is_one_line_naming_the_url():
    url = f"http://127.0.0.1:{free_port()}"
    published = run_cli("publish", "task.created", "--user-id", "ann", "--task", TASK, "--url", url)
    assert_one_line_error(published, 1, url, "connection refused", NOT_RUNNING)
    tailed = run_cli("tail", "--user-id", "ann", "--no-reconnect", "--url", url)
    assert_one_line_error(tailed, 1, url, "connection refused", NOT_RUNNING)


def test_refusals_by_a_running_service_are_one_line(dev_service):
    wrong_path = run_cli("tail", "--user-id", "ann", "--no-reconnect", "--url", dev_service.http + "/wrong")
    assert_one_line_error(wrong_path, 1, "HTTP 403", "base URL", f"ws://127.0.0.1:{dev_service.port}/wrong/ws")
    # Development auth closes the socket of a handshake without a user: the CLI reports the close.
    no_user = run_cli("tail", "--token", "not-a-user", "--no-reconnect", "--url", dev_service.http)
    assert_one_line_error(no_user, 1, "code=1008", "user_id")
    too_long = run_cli("tail", "--user-id", "u" * 300, "--no-reconnect", "--url", dev_service.http)
    assert_one_line_error(too_long, 1, "code=1008", "at most 256 characters")


async def test_tail_waits_for_a_server_that_is_not_up_yet():
    service = ServiceProcess(args=["--dev", "--heartbeat-interval", "0.5"])
    tail = await asyncio.create_subprocess_exec(
        *CLI, "tail", "--url", service.http, "--user-id", "tia",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(60):
            waiting = (await tail.stderr.readline()).decode()
            assert service.http in waiting and NOT_RUNNING in waiting and "retrying" in waiting
            await asyncio.to_thread(service.start)
            connected = msgspec.json.decode(await tail.stdout.readline())
            assert connected["type"] == "connected" and connected["user_id"] == "tia"
    finally:
        tail.terminate()
        await tail.wait()
        service.stop()
    assert b"Traceback" not in await tail.stderr.read()


def test_version_and_help_show_what_a_user_needs():
    assert run_cli("--version").stdout.strip() == f"tasksync {version('tasksync')}"
    for command in ("publish", "tail"):
        helped = run_cli(command, "--help")
        assert helped.returncode == 0
        assert "default: http://127.0.0.1:8005" in " ".join(helped.stdout.split()), helped.stdout
