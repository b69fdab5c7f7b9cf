"""Fixtures of the cluster tests: one real single-node cluster per pytest session, started when
the first test that needs it runs and torn down (leaving nothing on the machine) at the end.

The start and pod timings are printed in pytest's closing summary."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import pytest

from tests.cluster.kube_cluster import ClusterBinaries, KubeCluster, ensure_cluster_binaries
from tests.support.waiting import wait_until

BINARIES = pytest.StashKey[ClusterBinaries]()
TIMINGS = pytest.StashKey[dict[str, float]]()


def pytest_collection_finish(session: pytest.Session) -> None:
    # Build what is missing before the first test starts: the first build takes minutes and
    # must not count against any test's timeout.
    if any("kube_cluster" in getattr(item, "fixturenames", ()) for item in session.items):
        session.config.stash[BINARIES] = ensure_cluster_binaries()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    timings = config.stash.get(TIMINGS, None)
    if timings:
        terminalreporter.write_sep("-", "test cluster timings")
        for what, seconds in timings.items():
            terminalreporter.write_line(f"{what}: {seconds:.1f}s")


@pytest.fixture(scope="session")
def timings(request: pytest.FixtureRequest) -> dict[str, float]:
    """Durations the cluster tests measured, printed at the end of the session."""
    return request.config.stash.setdefault(TIMINGS, {})


@pytest.fixture(scope="session")
def kube_cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, timings: dict[str, float]
) -> Iterator[KubeCluster]:
    binaries = request.config.stash.get(BINARIES, None) or ensure_cluster_binaries()
    cluster = KubeCluster(binaries, tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
        timings.update({f"cluster start: {step}": seconds for step, seconds in cluster.timings.items()})
        yield cluster
    finally:
        stopping = time.monotonic()
        cluster.stop()
        timings["cluster stop and host cleanup"] = time.monotonic() - stopping


@pytest.fixture
def namespace(kube_cluster: KubeCluster) -> Iterator[str]:
    """A fresh namespace that pods can be created in; deleted after the test."""
    assert kube_cluster.api is not None
    name = f"test-{secrets.token_hex(4)}"
    kube_cluster.api.create("/api/v1/namespaces", {"metadata": {"name": name}})
    wait_until(lambda: kube_cluster.namespace_ready(name), timeout=60, what=f"namespace {name} ready for pods")
    yield name
    kube_cluster.api.delete(f"/api/v1/namespaces/{name}")
