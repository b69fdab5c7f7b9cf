"""The container image (Containerfile, `make image`) under the Helm chart's settings.

The image is the one scripts/image/build.sh builds: the first test builds it when it is missing
or out of date (minutes on a machine without a registry, which bootstraps a Debian base first;
seconds when nothing changed). The containers run with the chart's user, security context,
volumes, command and environment (tests/image/podman.py), on the host's network and a free
loopback port.
"""

from __future__ import annotations

import asyncio
import json
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tasksync.client import SyncClient
from tasksync.protocol import TaskUpdate
from tests.image.podman import BUILD_TIMEOUT, REPO, Containers, build_image, chart_values, podman
from tests.support.events import payload
from tests.support.jwt_tokens import AUDIENCE, ISSUER, SECRET, claims, hs256

# Whichever test comes first waits for the build.
pytestmark = pytest.mark.timeout(BUILD_TIMEOUT + 300)

API_KEY = "image-test-api-key"
IMAGE_BUDGET_BYTES = 250_000_000


@pytest.fixture(scope="session")
def image() -> str:
    return build_image()


@pytest.fixture
def containers(image: str) -> Iterator[Containers]:
    started = Containers(image)
    yield started
    started.remove_all()


def chart_environment() -> dict[str, str]:
    """The service's environment as charts/tasksync/templates/deployment.yaml sets it for one
    replica on the memory broker, JWT auth and an API key for POST /v1/events; the drain is
    shortened (the chart's default window is 10 s). TASKSYNC_HOST and TASKSYNC_PORT are added
    per container: loopback, where the chart listens on every interface of the pod."""
    values = chart_values()
    return {
        "TASKSYNC_LOG_LEVEL": values["logLevel"],
        "TASKSYNC_BROKER": "memory",
        "TASKSYNC_AUTH": "jwt",
        "TASKSYNC_JWT_SECRET": SECRET,
        "TASKSYNC_JWT_AUDIENCE": AUDIENCE,
        "TASKSYNC_JWT_ISSUER": ISSUER,
        "TASKSYNC_API_KEYS": API_KEY,
        "TASKSYNC_DAPR_SUBSCRIBE": "true",
        "TASKSYNC_DAPR_PUBSUB_NAME": values["dapr"]["pubsubName"],
        "TASKSYNC_DAPR_TOPIC": values["dapr"]["topic"],
        "TASKSYNC_DAPR_ROUTE": values["dapr"]["route"],
        "TASKSYNC_LIMITS_FILE": f"{values['limits']['mountPath']}/limits.yaml",
        "TASKSYNC_DRAIN_WINDOW": "1",
        "TASKSYNC_DRAIN_GRACE": "5",
    }


def proc_status(pid: int) -> dict[str, list[str]]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.split() for key, _, value in (line.partition(":") for line in lines)}


def test_image_declares_a_numeric_non_root_user_its_version_and_fits_the_budget(image):
    inspected = json.loads(podman("image", "inspect", image).stdout)[0]
    # What the kubelet needs to enforce runAsNonRoot when a pod does not set runAsUser.
    uid, _, gid = inspected["Config"]["User"].partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit(), inspected["Config"]
    labels = inspected["Config"]["Labels"]
    assert (
        labels["org.opencontainers.image.version"]
        == tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    )
    assert labels["org.opencontainers.image.source"].startswith("https://")
    assert labels["org.opencontainers.image.revision"] not in ("", "unknown")
    size = inspected["Size"]
    print(f"image size: {size / 1e6:.1f} MB")
    assert size <= IMAGE_BUDGET_BYTES, f"{image} is {size / 1e6:.1f} MB, over the budget of 250 MB"


def test_service_runs_as_pid_1_and_the_charts_user_without_privileges_on_a_read_only_root(containers):
    service = containers.serve(chart_environment())
    pod_security = chart_values()["podSecurityContext"]
    status = proc_status(service.host_pid())
    assert status["Uid"] == [str(pod_security["runAsUser"])] * 4
    assert status["Gid"] == [str(pod_security["runAsGroup"])] * 4
    # capabilities: drop ALL, allowPrivilegeEscalation: false, seccompProfile: RuntimeDefault.
    assert status["CapEff"] == status["CapPrm"] == status["CapBnd"] == ["0000000000000000"]
    assert status["NoNewPrivs"] == ["1"]
    assert status["Seccomp"] == ["2"]
    # The container's PID 1 is the service itself (exec form, no shell), so SIGTERM reaches it.
    assert status["NSpid"][-1] == "1"
    assert Path(f"/proc/{service.host_pid()}/cmdline").read_bytes().split(b"\0")[1:3] == [
        b"/opt/tasksync/bin/tasksync",
        b"serve",
    ]

    write = "import sys; open(sys.argv[1], 'w').write('x')"
    for path in ("/probe", "/opt/tasksync/probe"):
        refused = service.exec("python3", "-c", write, path)
        assert refused.returncode != 0
        # Read-only, not merely not this user's: root in the container is refused the same way.
        assert "Read-only file system" in refused.stderr, refused.stderr
        assert "Read-only file system" in service.exec("python3", "-c", write, path, user="0").stderr
    assert service.exec("python3", "-c", write, "/tmp/probe").returncode == 0


def test_byte_code_is_in_the_image_for_everything_the_entry_points_import(containers):
    # With a read-only root, Python cannot cache byte code: anything compiled from source at
    # import would be compiled again at every start.
    imports = containers.run("python3", "-v", "-c", "import tasksync.server, tasksync.cli, tasksync_operator.main")
    assert imports.returncode == 0, imports.stderr
    loaded = [line for line in imports.stderr.splitlines() if line.startswith("# code object from")]
    from_source = [line for line in loaded if not line.rstrip("'").endswith(".pyc")]
    assert len(loaded) > 500
    assert from_source == []


async def test_an_event_reaches_a_websocket_client_and_sigterm_drains_it_with_1012(containers):
    service = containers.serve(chart_environment())
    client = SyncClient(service.ws, token=hs256(claims("alice")))
    await client.connect()

    async with httpx.AsyncClient(timeout=10) as http:
        # The chart's readiness probe: the memory broker is there, and nothing is draining yet.
        assert (await http.get(service.http + "/health/ready")).status_code == 200
        published = await http.post(
            service.http + "/v1/events",
            json=payload("alice", title="from the image"),
            headers={"authorization": f"Bearer {API_KEY}"},
        )
    assert published.status_code == 202, published.text

    async def next_update() -> TaskUpdate:
        while not isinstance(frame := await client.receive(), TaskUpdate):
            pass
        return frame

    update = await asyncio.wait_for(next_update(), timeout=30)
    assert update.event == "task.created" and update.task["title"] == "from the image"

    service.signal("TERM")
    code, _ = await asyncio.wait_for(client.wait_closed(), timeout=30)
    assert code == 1012
    # Within the drain grace (5 s) and far from podman's own limit: the exit is the drain's.
    assert await asyncio.to_thread(service.wait, 30) == 0


def test_operator_entry_point_runs_in_the_image(containers):
    helped = containers.run("tasksync-operator", "--help")
    assert helped.returncode == 0, helped.stderr
    assert "usage: tasksync-operator" in helped.stdout
