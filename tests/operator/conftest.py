"""Fixtures: a real API server (session) where the operator's user has exactly the operator's RBAC,
admission policy and Lease; the operator running in-process against it (session); API clients
as the admin and as the operator, a fresh watched namespace per test, the Dapr CRD on demand, and
operator processes of a test's own (`operator_process`)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes_asyncio import client, config

from tasksync_operator import main, rbac
from tasksync_operator.config import OperatorConfig
from tests.operator.operator_testkit import (
    ADMIN_USER,
    CONFIGMAP_POLICY,
    CRD_DIR,
    DAPR_CRD,
    LEASE_NAME,
    LEASE_NAMESPACE,
    OPERATOR_USER,
    LocalCluster,
    OperatorProcess,
    apply_crd,
    ensure_binaries,
    free_port,
    load_yaml,
    wait_http_ok,
)

# The operator under test watches only namespaces matching this glob (exercising kopf's
# namespace observer and the RBAC it needs); `namespace` hands out fresh matching ones.
WATCHED_NAMESPACES = "e2e-*"

BINARIES = pytest.StashKey[dict[str, str]]()


def pytest_collection_finish(session: pytest.Session) -> None:
    # Prepare the binaries before the first test starts: the first build takes minutes and
    # must not count against any test's timeout.
    if any("cluster" in getattr(item, "fixturenames", ()) for item in session.items):
        session.config.stash[BINARIES] = ensure_binaries()


async def _prepare_cluster(cluster: LocalCluster) -> None:
    async with admin_client(cluster) as api:
        for path in sorted(CRD_DIR.glob("*.yaml")):
            await apply_crd(api, load_yaml(path))
        # The operator's user gets exactly the documented rules and admission policy, nothing else.
        await _confine_configmap_writes(api)
        await _grant_the_lease(api)
        authz = client.RbacAuthorizationV1Api(api)
        await authz.create_cluster_role(
            {"metadata": {"name": "tasksync-operator"}, "rules": rbac.policy_rules()}
        )
        await authz.create_cluster_role_binding(
            {
                "metadata": {"name": "tasksync-operator"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "tasksync-operator",
                },
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": OPERATOR_USER}
                ],
            }
        )


async def _confine_configmap_writes(api: client.ApiClient) -> None:
    admission = client.AdmissionregistrationV1Api(api)
    await admission.create_validating_admission_policy(
        {"metadata": {"name": CONFIGMAP_POLICY}, "spec": rbac.configmap_write_policy(OPERATOR_USER)}
    )
    await admission.create_validating_admission_policy_binding(
        {
            "metadata": {"name": CONFIGMAP_POLICY},
            "spec": {"policyName": CONFIGMAP_POLICY, "validationActions": ["Deny"]},
        }
    )


async def _grant_the_lease(api: client.ApiClient) -> None:
    await client.CoreV1Api(api).create_namespace({"metadata": {"name": LEASE_NAMESPACE}})
    authz = client.RbacAuthorizationV1Api(api)
    await authz.create_namespaced_role(
        LEASE_NAMESPACE,
        {"metadata": {"name": "tasksync-operator"}, "rules": rbac.leader_election_rules(LEASE_NAME)},
    )
    await authz.create_namespaced_role_binding(
        LEASE_NAMESPACE,
        {
            "metadata": {"name": "tasksync-operator"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "tasksync-operator"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": OPERATOR_USER}],
        },
    )


@contextlib.asynccontextmanager
async def admin_client(cluster: LocalCluster, user: str = ADMIN_USER) -> AsyncIterator[client.ApiClient]:
    """An API client as `user` (the admin unless told otherwise)."""
    configuration = client.Configuration()
    await config.load_kube_config(
        config_file=str(cluster.kubeconfig(user)),
        client_configuration=configuration,
        persist_config=False,
    )
    async with client.ApiClient(configuration) as api:
        yield api


@pytest.fixture(scope="session")
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalCluster]:
    binaries = request.config.stash.get(BINARIES, None) or ensure_binaries()
    local = LocalCluster(tmp_path_factory.mktemp("kube"), binaries["ETCD"], binaries["KUBE_APISERVER"])
    try:
        local.start()
        asyncio.run(_prepare_cluster(local))
        yield local
    finally:
        local.stop()


@dataclass
class RunningOperator:
    liveness_url: str
    config: OperatorConfig


@pytest.fixture(scope="package")
def operator(cluster: LocalCluster) -> Iterator[RunningOperator]:
    """tasksync_operator.main.run in a thread with its own event loop, as the operator's user.

    Stopped once the operator's tests are done: left running, its thread went on calling the
    `random` module (kopf picks credentials and peering intervals with it) while later tests
    ran, and Hypothesis takes a change of the global random state during a draw for a strategy
    that uses it."""
    liveness_url = f"http://127.0.0.1:{free_port()}/healthz"
    operator_config = OperatorConfig(
        kubeconfig=str(cluster.kubeconfig(OPERATOR_USER)),
        namespaces=(WATCHED_NAMESPACES,),
        # Short backoff so "recovers once Dapr is installed" is seconds, not minutes.
        retry_initial_delay=0.5,
        retry_max_delay=2.0,
    )
    stop_flag, ready_flag = threading.Event(), threading.Event()
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            asyncio.run(
                main.run(
                    operator_config,
                    liveness=liveness_url,
                    stop_flag=stop_flag,
                    ready_flag=ready_flag,
                )
            )
        except BaseException as exc:  # reported to the test session below
            failure.append(exc)
            ready_flag.set()

    thread = threading.Thread(target=serve, name="tasksync-operator", daemon=True)
    thread.start()
    try:
        assert ready_flag.wait(60), "operator did not become ready"
        assert not failure, f"operator crashed: {failure[0]!r}"
        wait_http_ok(liveness_url, deadline_seconds=30)
        yield RunningOperator(liveness_url=liveness_url, config=operator_config)
    finally:
        stop_flag.set()
        thread.join(30)
    assert not failure, f"operator crashed: {failure[0]!r}"


@pytest.fixture
async def kube(cluster: LocalCluster) -> AsyncIterator[client.ApiClient]:
    """An API client with admin rights: the tests play the platform team."""
    async with admin_client(cluster) as api:
        yield api


@pytest.fixture
async def operator_kube(cluster: LocalCluster) -> AsyncIterator[client.ApiClient]:
    """An API client with the operator's rights, for what the operator may and may not do."""
    async with admin_client(cluster, OPERATOR_USER) as api:
        yield api


@pytest.fixture
async def namespace(kube: client.ApiClient, operator: RunningOperator) -> str:
    """A fresh namespace the operator watches."""
    name = f"e2e-{secrets.token_hex(4)}"
    await client.CoreV1Api(kube).create_namespace({"metadata": {"name": name}})
    return name


@pytest.fixture
async def dapr_crd(kube: client.ApiClient) -> None:
    """Dapr's Subscription CRD is installed and served."""
    await apply_crd(kube, load_yaml(DAPR_CRD))


STARTED_OPERATORS = pytest.StashKey[list[OperatorProcess]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    """A failed test that ran operator processes reports their logs: what the operator saw is
    the first question about any failure here, and the log files go with the tmp_path."""
    report: pytest.TestReport = yield
    if report.when == "call" and report.failed:
        for process in item.stash.get(STARTED_OPERATORS, []):
            report.sections.append((f"operator log {process.log_path}", process.log_path.read_text()[-20_000:]))
    return report


@pytest.fixture
def operator_process(
    request: pytest.FixtureRequest, cluster: LocalCluster, tmp_path: Path
) -> Iterator[Callable[..., OperatorProcess]]:
    """Start `tasksync-operator` processes watching one namespace; all are killed at the end."""
    started: list[OperatorProcess] = []
    request.node.stash[STARTED_OPERATORS] = started

    def start(namespace: str, *flags: str, kubeconfig: Path | None = None) -> OperatorProcess:
        liveness = f"http://127.0.0.1:{free_port()}/healthz"
        argv = [
            sys.executable,
            "-m",
            "tasksync_operator.main",
            f"--namespace={namespace}",
            f"--kubeconfig={kubeconfig or cluster.kubeconfig(OPERATOR_USER)}",
            f"--liveness={liveness}",
            *flags,
        ]
        process = OperatorProcess(argv, tmp_path / f"operator-{len(started)}.log", liveness).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
