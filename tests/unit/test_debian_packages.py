"""scripts/debian-packages.sh, the one place the scripts install Debian packages: it says what it
installs, installs only what is missing, goes through sudo when not root (and says so in one line
when there is no sudo), and leaves the machine's own services as they were.

apt-get, dpkg-query, systemctl, sudo and id are stand-ins on PATH that keep their state in files:
the helper runs for real against them, without touching this machine's packages."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

HELPER = Path(__file__).resolve().parents[2] / "scripts" / "debian-packages.sh"

# Each stand-in records its command line in $STATE/calls. Installing a package marks it installed
# and, when $STATE/brings/<package> names a unit, creates that unit and starts it, as a Debian
# postinst does under systemd.
STUBS = {
    "id": 'echo "${FAKE_UID:-0}"\n',
    "sudo": 'echo "sudo $*" >>"$STATE/calls"\nexec "$@"\n',
    "dpkg-query": 'package="${!#}"\n[ -e "$STATE/installed/$package" ] && printf installed || printf not-installed\n',
    "apt-get": (
        'echo "apt-get DEBIAN_FRONTEND=$DEBIAN_FRONTEND $*" >>"$STATE/calls"\n'
        'for word in "$@"; do\n'
        '  case "$word" in -*|install|update|DPkg::*) continue ;; esac\n'
        '  touch "$STATE/installed/$word"\n'
        '  if [ -e "$STATE/brings/$word" ]; then\n'
        '    unit="$(cat "$STATE/brings/$word")"\n'
        '    echo active >"$STATE/units/$unit"\n'
        "  fi\n"
        "done\n"
    ),
    "systemctl": (
        'echo "systemctl $*" >>"$STATE/calls"\n'
        'unit="${!#}"\n'
        'case "$1" in\n'
        '  show) [ -e "$STATE/units/$unit" ] && echo loaded || echo not-found ;;\n'
        '  is-active) [ "$(cat "$STATE/units/$unit" 2>/dev/null)" = active ] ;;\n'
        '  stop|disable) echo inactive >"$STATE/units/$unit" ;;\n'
        "esac\n"
    ),
}


@dataclass
class Run:
    returncode: int
    stderr: str
    calls: list[str]

    def changes(self) -> list[str]:
        """The calls that change the machine: apt-get and systemctl's stop and disable."""
        return [
            c
            for c in self.calls
            if c.startswith("apt-get") or c.split()[:2] in (["systemctl", "stop"], ["systemctl", "disable"])
        ]


class Machine:
    """A stand-in machine: its installed packages, its systemd units, and whether sudo exists."""

    def __init__(self, root: Path) -> None:
        self.state = root / "state"
        self.bin = root / "bin"
        for folder in ("installed", "units", "brings"):
            (self.state / folder).mkdir(parents=True)
        self.bin.mkdir()
        for name, body in STUBS.items():
            stub = self.bin / name
            stub.write_text("#!/bin/bash\n" + body)
            stub.chmod(0o755)

    def installed(self, *packages: str) -> None:
        for package in packages:
            (self.state / "installed" / package).touch()

    def unit(self, name: str, state: str) -> None:
        (self.state / "units" / name).write_text(state + "\n")

    def unit_state(self, name: str) -> str:
        return (self.state / "units" / name).read_text().strip()

    def package_brings(self, package: str, unit: str) -> None:
        (self.state / "brings" / package).write_text(unit)

    def without_sudo(self) -> None:
        (self.bin / "sudo").unlink()

    def run(self, command: str, *, uid: int = 0) -> Run:
        """Source the helper, with systemd taken as running, and run `command`."""
        script = f'set -euo pipefail\nsource "{HELPER}"\nsystemd_running() {{ true; }}\n{command}\n'
        # Only the stand-ins and the basic tools the helper needs besides them.
        tools = self.state.parent / "tools"
        if not tools.exists():
            tools.mkdir()
            for tool in ("cat", "env", "touch", "printf", "true"):
                (tools / tool).symlink_to(subprocess.check_output(["which", tool], text=True).strip())
        result = subprocess.run(
            ["/bin/bash", "-c", script],
            env={"PATH": f"{self.bin}:{tools}", "STATE": str(self.state), "FAKE_UID": str(uid)},
            capture_output=True,
            text=True,
            timeout=30,
        )
        calls_file = self.state / "calls"
        calls = calls_file.read_text().splitlines() if calls_file.exists() else []
        calls_file.unlink(missing_ok=True)
        return Run(result.returncode, result.stderr, calls)


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    return Machine(tmp_path)


def test_only_the_missing_packages_are_installed_after_one_line_naming_them(machine: Machine) -> None:
    machine.installed("podman")
    run = machine.run("install_packages podman mmdebstrap uidmap")
    assert run.returncode == 0, run.stderr
    assert run.stderr.splitlines() == ["installing Debian packages: mmdebstrap uidmap (needs root)"]
    assert run.changes() == [
        (
            "apt-get DEBIAN_FRONTEND=noninteractive -o DPkg::Lock::Timeout=600 -y -q install "
            "--no-install-recommends mmdebstrap uidmap"
        )
    ]


def test_nothing_is_run_or_said_when_every_package_is_there(machine: Machine) -> None:
    machine.installed("podman", "mmdebstrap")
    run = machine.run("install_packages podman mmdebstrap")
    assert (run.returncode, run.stderr, run.changes()) == (0, "", [])


def test_a_user_other_than_root_installs_through_sudo(machine: Machine) -> None:
    run = machine.run("install_packages chromium", uid=1000)
    assert run.returncode == 0, run.stderr
    assert [c for c in run.calls if c.startswith("sudo env")] == [
        (
            "sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -y -q install "
            "--no-install-recommends chromium"
        )
    ]
    assert (machine.state / "installed" / "chromium").exists()


def test_without_root_or_sudo_it_fails_with_one_line_saying_so(machine: Machine) -> None:
    machine.without_sudo()
    run = machine.run("install_packages chromium", uid=1000)
    assert run.returncode != 0
    assert run.stderr.splitlines() == [
        "installing Debian packages: chromium (needs root)",
        "debian-packages: not root, and sudo is not installed: run this as root, or install sudo",
    ]
    assert run.changes() == []


@pytest.mark.parametrize(
    ("unit_before", "changes", "state_after"),
    [
        # A unit the install brought and started is ours: stopped, and disabled for the next boot.
        (None, ["systemctl disable --now redis-server.service"], "inactive"),
        # A service the machine was running is its own: left running and enabled.
        ("active", [], "active"),
        # A unit the machine had, stopped, that the install started: stopped again, not disabled.
        ("inactive", ["systemctl stop redis-server.service"], "inactive"),
    ],
    ids=["brought-by-the-install", "running-before", "stopped-before"],
)
def test_a_server_package_leaves_the_service_as_the_machine_had_it(
    machine: Machine, unit_before: str | None, changes: list[str], state_after: str
) -> None:
    if unit_before is not None:
        machine.unit("redis-server.service", unit_before)
    machine.package_brings("redis-server", "redis-server.service")
    run = machine.run("install_server_package redis-server redis-server")
    assert run.returncode == 0, run.stderr
    assert [c for c in run.changes() if c.startswith("systemctl")] == changes
    assert machine.unit_state("redis-server.service") == state_after


def test_an_installed_server_package_is_not_touched(machine: Machine) -> None:
    machine.installed("containerd")
    machine.unit("containerd.service", "active")
    run = machine.run("install_server_package containerd containerd")
    assert (run.returncode, run.stderr, run.calls) == (0, "", [])
