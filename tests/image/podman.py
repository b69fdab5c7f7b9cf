"""The TaskSync image under podman, run the way the Helm chart runs it, for the image tests.

Podman runs through scripts/image/podman.sh, so the tests see the storage `make image` built
into. Containers get the host's network (they listen on a free loopback port, nothing else),
the chart's user and security context, a read-only root file system, and the chart's volumes:
an empty writable /tmp (its emptyDir) and an empty read-only limits directory (its optional
ConfigMap, before any RateLimitPolicy exists).
"""

from __future__ import annotations

import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.servers import free_port
from tests.support.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
PODMAN = REPO / "scripts" / "image" / "podman.sh"
BUILD = REPO / "scripts" / "image" / "build.sh"
CHART_VALUES = REPO / "charts" / "tasksync" / "values.yaml"
# A cold build on a machine without a registry bootstraps a Debian base first: minutes.
BUILD_TIMEOUT = 1500


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(PODMAN), *args], check=False, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
    return done


def build_image() -> str:
    """The image `make image` builds (built now when missing or out of date); its name."""
    done = subprocess.run(["bash", str(BUILD)], check=False, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    if done.returncode != 0:
        raise AssertionError(f"scripts/image/build.sh exited {done.returncode}:\n{done.stderr[-6000:]}")
    outputs = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    return outputs["IMAGE"]


def chart_values() -> dict[str, Any]:
    return yaml.safe_load(CHART_VALUES.read_text())


def chart_security_options(values: dict[str, Any]) -> list[str]:
    """Podman's options for the chart's pod and container security contexts."""
    pod = dict(values["podSecurityContext"])
    container = dict(values["securityContext"])
    options = [f"--user={pod.pop('runAsUser')}:{pod.pop('runAsGroup')}", f"--group-add={pod.pop('fsGroup')}"]
    # runAsNonRoot is the kubelet's check that the user is not 0: the tests assert it directly.
    assert pod.pop("runAsNonRoot") is True
    # RuntimeDefault: the runtime's default seccomp profile, which podman applies unless told not to.
    assert pod.pop("seccompProfile") == {"type": "RuntimeDefault"}
    if container.pop("readOnlyRootFilesystem"):
        # Only the chart's own volumes are writable: no tmpfs of podman's on /run or /var/tmp.
        options += ["--read-only", "--read-only-tmpfs=false"]
    if not container.pop("allowPrivilegeEscalation"):
        options.append("--security-opt=no-new-privileges")
    options += [f"--cap-drop={capability}" for capability in container.pop("capabilities")["drop"]]
    # A setting the chart gains later must be carried over here, not silently dropped.
    assert not pod and not container, f"chart security settings with no podman option here: {pod} {container}"
    return options


def chart_volume_options(values: dict[str, Any]) -> list[str]:
    """The chart's volumes: /tmp (an emptyDir of 64Mi) and the limits ConfigMap, still absent."""
    return ["--tmpfs=/tmp:rw,size=64m", f"--tmpfs={values['limits']['mountPath']}:ro"]


@dataclass
class Container:
    name: str
    port: int

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def inspect(self, template: str) -> str:
        return podman("inspect", "--format", template, self.name).stdout.strip()

    def host_pid(self) -> int:
        """The host's id of the container's PID 1 (rootful podman: no user namespace)."""
        return int(self.inspect("{{.State.Pid}}"))

    def exec(self, *command: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
        return podman("exec", *([f"--user={user}"] if user else []), self.name, *command, check=False)

    def signal(self, name: str) -> None:
        podman("kill", f"--signal={name}", self.name)

    def wait(self, timeout: float) -> int:
        """The exit code, once the container has exited (fails after `timeout` seconds)."""
        return int(podman("wait", self.name, timeout=timeout).stdout.strip())

    def healthy(self) -> bool:
        if self.inspect("{{.State.Status}}") != "running":
            raise AssertionError(f"container {self.name} is not running:\n{self.logs()}")
        try:
            return httpx.get(self.http + "/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def logs(self) -> str:
        done = podman("logs", self.name, check=False)
        return done.stdout + done.stderr

    def remove(self) -> None:
        podman("rm", "--force", "--time=0", self.name, check=False)


class Containers:
    """Starts containers of the image with the chart's settings; removes them all at the end."""

    def __init__(self, image: str) -> None:
        self.image = image
        self.values = chart_values()
        self.started: list[Container] = []

    def options(self) -> list[str]:
        return [
            "--network=host",
            *chart_security_options(self.values),
            *chart_volume_options(self.values),
        ]

    def serve(self, env: dict[str, str]) -> Container:
        """`tasksync serve` (the chart's command) with this environment; returns once healthy."""
        container = Container(name=f"tasksync-test-{uuid.uuid4().hex[:12]}", port=free_port())
        self.started.append(container)
        env = {**env, "TASKSYNC_HOST": "127.0.0.1", "TASKSYNC_PORT": str(container.port)}
        podman(
            "run",
            "--detach",
            f"--name={container.name}",
            *self.options(),
            *(f"--env={key}={value}" for key, value in env.items()),
            self.image,
            "tasksync",
            "serve",
        )
        wait_until(container.healthy, timeout=60, interval=0.2, what=f"/health of container {container.name}")
        return container

    def run(self, *command: str) -> subprocess.CompletedProcess[str]:
        """Run a command in a container of the image to its end; its output."""
        name = f"tasksync-test-{uuid.uuid4().hex[:12]}"
        try:
            return podman("run", "--rm", f"--name={name}", *self.options(), self.image, *command, check=False)
        finally:
            podman("rm", "--force", "--time=0", "--ignore", name, check=False)

    def remove_all(self) -> None:
        for container in self.started:
            # Captured by pytest and shown only when the test fails.
            print(f"--- log of container {container.name} ---\n{container.logs()}")
            container.remove()
