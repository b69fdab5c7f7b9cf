"""Fixtures of the cluster tests: one real single-node cluster per pytest session, started when
the first test that needs it runs and torn down (leaving nothing on the machine) at the end.

The start and pod timings are printed in pytest's closing summary."""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cluster.kube_cluster import ClusterBinaries, KubeCluster, ensure_cluster_binaries
from tests.support.waiting import wait_until


@dataclass(frozen=True)
class TaskSyncImage:
    """The image `make image-archive` builds: its name and its OCI archive."""

    name: str
    archive: str


BINARIES = pytest.StashKey[ClusterBinaries]()
TASKSYNC_IMAGE = pytest.StashKey[TaskSyncImage]()
TIMINGS = pytest.StashKey[dict[str, float]]()
BUILD_IMAGE = Path(__file__).resolve().parents[2] / "scripts" / "image" / "build.sh"


def build_tasksync_image() -> TaskSyncImage:
    result = subprocess.run(["bash", str(BUILD_IMAGE), "--oci-archive"], check=True, stdout=subprocess.PIPE, text=True)
    built = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    return TaskSyncImage(name=built["IMAGE"], archive=built["ARCHIVE"])


def pytest_collection_finish(session: pytest.Session) -> None:
    # Build what is missing before the first test starts: the first builds take minutes and
    # must not count against any test's timeout.
    needed = {name for item in session.items for name in getattr(item, "fixturenames", ())}
    if "kube_cluster" in needed:
        session.config.stash[BINARIES] = ensure_cluster_binaries()
    if "tasksync_image" in needed:
        session.config.stash[TASKSYNC_IMAGE] = build_tasksync_image()


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


@pytest.fixture(scope="session")
def tasksync_image(request: pytest.FixtureRequest, kube_cluster: KubeCluster) -> str:
    """The TaskSync image, built when missing or out of date and imported into the node; its name."""
    image = request.config.stash.get(TASKSYNC_IMAGE, None) or build_tasksync_image()
    kube_cluster.import_image(image.archive)
    return image.name


@pytest.fixture
def namespace(kube_cluster: KubeCluster) -> Iterator[str]:
    """A fresh namespace that pods can be created in; deleted after the test."""
    assert kube_cluster.api is not None
    name = f"test-{secrets.token_hex(4)}"
    kube_cluster.api.create("/api/v1/namespaces", {"metadata": {"name": name}})
    wait_until(lambda: kube_cluster.namespace_ready(name), timeout=60, what=f"namespace {name} ready for pods")
    yield name
    kube_cluster.api.delete(f"/api/v1/namespaces/{name}")
