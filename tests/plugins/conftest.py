"""Install the test directory's third-party plugins into the running environment, with pip,
the way a platform team installs a plugin package next to TaskSync."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


def _install(directory: Path) -> None:
    # Always (re)installed: a copy left from an older checkout would test stale code.
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", str(directory)],
        check=True,
    )


@pytest.fixture(scope="session")
def third_party_plugins() -> None:
    _install(FIXTURES / "tasksync-toast-fr")
    _install(FIXTURES / "tasksync-faulty")
