"""The operator as a program: command line, liveness endpoint, JSON logs, graceful stop."""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import subprocess
import sys
import urllib.error
import urllib.request

from kubernetes_asyncio import client
from operator_testkit import OPERATOR_USER, eventually, free_port
from tasksync_operator.main import DEFAULT_LIVENESS, parse_args
from tasksync_operator.model import GROUP, TSS_PLURAL, VERSION


def test_defaults_watch_every_namespace_with_json_logs():
    options = parse_args([])
    assert options.namespaces == []
    assert options.liveness == DEFAULT_LIVENESS
    assert options.log_format == "json"
    assert options.kubeconfig is None


def test_namespaces_repeat():
    options = parse_args(["-n", "team-a", "--namespace", "team-*", "--retry-max-delay", "30"])
    assert options.namespaces == ["team-a", "team-*"]
    assert options.retry_max_delay == 30


async def http_status(url: str) -> int:
    def get() -> int:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status
        except (urllib.error.URLError, OSError) as exc:
            raise AssertionError(f"{url}: {exc}") from exc

    return await asyncio.to_thread(get)


async def test_liveness_endpoint(operator):
    assert await http_status(operator.liveness_url) == 200


async def test_command_runs_one_namespace_logs_json_and_stops_on_sigterm(cluster, kube, dapr_crd, tmp_path):
    """`tasksync-operator` as a process, the way its Deployment runs it."""
    namespace = f"solo-{secrets.token_hex(4)}"
    liveness = f"http://127.0.0.1:{free_port()}/healthz"
    log_path = tmp_path / "operator.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tasksync_operator.main",
                "--namespace",
                namespace,
                "--kubeconfig",
                str(cluster.kubeconfig(OPERATOR_USER)),
                "--liveness",
                liveness,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        await eventually(lambda: http_status(liveness), timeout=60, interval=0.25)

        await client.CoreV1Api(kube).create_namespace({"metadata": {"name": namespace}})
        await client.CustomObjectsApi(kube).create_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            TSS_PLURAL,
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "TaskSyncSubscription",
                "metadata": {"name": "solo"},
                "spec": {"pubsubName": "pubsub", "topic": "task-events"},
            },
        )

        async def ready() -> None:
            obj = await client.CustomObjectsApi(kube).get_namespaced_custom_object(
                GROUP, VERSION, namespace, TSS_PLURAL, "solo"
            )
            assert [c["status"] for c in obj.get("status", {}).get("conditions", [])] == ["True"], obj.get(
                "status"
            )

        await eventually(ready)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    assert lines and all({"message", "severity", "timestamp"} <= line.keys() for line in lines)
    about_solo = [line for line in lines if line.get("object", {}).get("name") == "solo"]
    assert any(line.get("subscription") == "solo" for line in about_solo), about_solo
