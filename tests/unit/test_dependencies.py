"""The dependency ranges tell the truth: the lock files (`make lock`) agree with pyproject.toml,
the import-time check of uvicorn's internals names the supported versions, and
`tasksync-operator` without its extra says what to install."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tasksync import uvicorn_compat

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# What the lock files were resolved for (scripts/lock.sh).
LOCK_ENVIRONMENT = {"python_version": "3.11", "python_full_version": "3.11.0", "sys_platform": "linux",
                    "platform_system": "Linux", "platform_python_implementation": "CPython",
                    "implementation_name": "cpython", "os_name": "posix", "platform_machine": "x86_64"}


def direct_requirements() -> list[Requirement]:
    """pyproject.toml's dependencies and every extra's, the project's own extras unfolded."""
    project = PYPROJECT["project"]
    requirements = [Requirement(line) for line in project["dependencies"]]
    for lines in project["optional-dependencies"].values():
        requirements += [Requirement(line) for line in lines if not line.startswith("tasksync[")]
    return [r for r in requirements if r.marker is None or r.marker.evaluate({**LOCK_ENVIRONMENT, "extra": ""})]


def pins(lock_file: str) -> dict[str, Version]:
    pinned = {}
    for line in (ROOT / "requirements" / lock_file).read_text().splitlines():
        if "==" in line and not line.startswith((" ", "#")):
            name, _, rest = line.partition("==")
            pinned[canonicalize_name(name)] = Version(rest.split()[0].rstrip("\\").split(";")[0])
    return pinned


@pytest.mark.parametrize("lock_file", ["lock.txt", "lowest.txt"])
def test_every_direct_dependency_is_pinned_within_its_range(lock_file):
    pinned = pins(lock_file)
    outside = {
        str(r): str(pinned.get(canonicalize_name(r.name)))
        for r in direct_requirements()
        if pinned.get(canonicalize_name(r.name)) not in r.specifier
    }
    assert outside == {}, f"requirements/{lock_file} disagrees with pyproject.toml: run make lock"


def test_the_lowest_run_installs_each_direct_dependency_at_its_floor():
    # A floor nothing can install (another dependency wants more) would be one never tested.
    pinned = pins("lowest.txt")
    not_at_floor = {}
    for requirement in direct_requirements():
        floors = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
        if floors and pinned[canonicalize_name(requirement.name)] != max(floors):
            not_at_floor[str(requirement)] = str(pinned[canonicalize_name(requirement.name)])
    assert not_at_floor == {}


def test_the_import_check_states_pyprojects_ranges():
    declared = {canonicalize_name(r.name): r for r in direct_requirements()}
    for stated in (uvicorn_compat.SUPPORTED_UVICORN, uvicorn_compat.SUPPORTED_WEBSOCKETS):
        requirement = Requirement(stated)
        assert str(declared[canonicalize_name(requirement.name)]) == str(requirement)


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)


@pytest.mark.parametrize(
    ("breakage", "named"),
    [
        # uvicorn 0.35 to 0.52.0: the sans-I/O protocol without write flow control.
        (
            (
                "import uvicorn.protocols.websockets.websockets_sansio_impl as m\n"
                "del m.WebSocketsSansIOProtocol.pause_writing"
            ),
            "write flow control",
        ),
        # An attribute transport.py reads that uvicorn no longer sets.
        (
            (
                "import uvicorn.protocols.http.httptools_impl as m\n"
                "original = m.HttpToolsProtocol.__init__\n"
                "def without_pipeline(self, *args, **kwargs):\n"
                "    original(self, *args, **kwargs)\n"
                "m.HttpToolsProtocol.__init__ = without_pipeline"
            ),
            "HttpToolsProtocol.pipeline",
        ),
        # uvicorn before 0.35: no sans-I/O protocol at all.
        ("import sys\nsys.modules['uvicorn.protocols.websockets.websockets_sansio_impl'] = None", "a module"),
        # A uvicorn whose protocol has a method of TaskSync's Transport interface of its own.
        (
            (
                "import uvicorn.protocols.websockets.websockets_sansio_impl as m\n"
                "m.WebSocketsSansIOProtocol.abort = lambda self: None"
            ),
            "WebSocketsSansIOProtocol.abort()",
        ),
    ],
    ids=["no-flow-control", "attribute-gone", "module-gone", "name-taken"],
)
def test_an_unsupported_uvicorn_fails_on_import_naming_the_supported_versions(breakage, named):
    result = run_python(f"{breakage}\nimport tasksync.transport")
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("tasksync.uvicorn_compat.UnsupportedUvicorn: ")
    assert uvicorn_compat.SUPPORTED_UVICORN in last_line and named in last_line


def test_the_supported_uvicorn_passes_the_import_check():
    result = run_python("import tasksync.transport")
    assert result.returncode == 0, result.stderr


def test_the_operator_command_without_kopf_says_which_extra_to_install():
    module, _, function = PYPROJECT["project"]["scripts"]["tasksync-operator"].partition(":")
    # None in sys.modules makes `import kopf` raise ModuleNotFoundError, as if not installed.
    result = run_python(f"import sys\nsys.modules['kopf'] = None\nimport {module}\n{module}.{function}()")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        "tasksync-operator: kopf is not installed; the operator needs TaskSync's 'operator' extra: "
        "pip install 'tasksync[operator]'"
    )
