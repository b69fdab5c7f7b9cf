"""The operator as a program: command line, liveness endpoint, JSON logs, graceful stop."""

from __future__ import annotations

import asyncio
import secrets
import urllib.error
import urllib.request

import pytest
from kubernetes_asyncio import client

from tasksync_operator.main import DEFAULT_LIVENESS, election_settings, parse_args
from tests.operator.operator_testkit import create_tss, tss, wait_ready


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


async def test_command_runs_one_namespace_logs_json_and_stops_on_sigterm(kube, dapr_crd, operator_process):
    """`tasksync-operator` as a process, the way its Deployment runs it."""
    namespace = f"solo-{secrets.token_hex(4)}"
    # The namespace first, as in production: one created within kopf's first moments can be
    # missed (docs/operator.md, "Namespaces created while the operator starts").
    await client.CoreV1Api(kube).create_namespace({"metadata": {"name": namespace}})
    operator = operator_process(namespace)
    await operator.wait_live()

    await create_tss(kube, namespace, tss("solo"))
    await wait_ready(kube, namespace, "solo")
    assert await operator.stop() == 0

    lines = operator.log_lines()
    assert lines and all({"message", "severity", "timestamp"} <= line.keys() for line in lines), lines
    about_solo = [line for line in lines if line.get("object", {}).get("name") == "solo"]
    assert any(line.get("subscription") == "solo" for line in about_solo), about_solo


def test_leader_election_flags():
    options = parse_args(
        [
            "--leader-elect-resource-name=tasksync-operator",
            "--leader-elect-resource-namespace=tasksync",
            "--leader-elect-lease-duration=30",
        ]
    )
    election = election_settings(options)
    assert election is not None
    assert (election.lease_name, election.lease_namespace) == ("tasksync-operator", "tasksync")
    assert (election.lease_duration, election.renew_deadline, election.retry_period) == (30, 10, 2)
    assert election_settings(parse_args([])) is None


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--leader-elect-resource-name=tasksync-operator"], "needs --leader-elect-resource-namespace"),
        (
            [
                "--leader-elect-resource-name=x",
                "--leader-elect-resource-namespace=y",
                "--leader-elect-renew-deadline=20",
            ],
            "lease duration > renew deadline > retry period",
        ),
    ],
    ids=["no-namespace", "renew-deadline-not-below-lease-duration"],
)
def test_leader_election_refuses_inconsistent_flags(argv, expected, capsys):
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert expected in capsys.readouterr().err
