"""Fixtures shared by every test: real services on free loopback ports."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.redis_server import RedisServer
from tests.support.servers import ServiceProcess

TESTS = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with its directory's name (tests/unit: `unit`), so that `pytest -m unit`
    runs that directory. The markers are registered in pyproject.toml: with --strict-markers a new
    directory without one fails collection instead of going unmarked."""
    for item in items:
        item.add_marker(item.path.relative_to(TESTS).parts[0])


@pytest.fixture
def start_service() -> Iterator[Callable[..., ServiceProcess]]:
    """Start `tasksync serve` with extra flags and environment; stopped after the test."""
    started: list[ServiceProcess] = []

    def start(*args: str, env: dict[str, str] | None = None, wait_ready: bool = True) -> ServiceProcess:
        service = ServiceProcess(args=list(args), env=env or {})
        started.append(service)
        return service.start(wait_ready=wait_ready)

    yield start
    for service in started:
        service.stop()
        # Captured by pytest and shown only when the test fails.
        print(f"--- log of tasksync on port {service.port} ---\n{service.log()}")


@pytest.fixture
def dev_service(start_service: Callable[..., ServiceProcess]) -> ServiceProcess:
    """The service in development mode with a short heartbeat."""
    return start_service("--dev", "--heartbeat-interval", "0.5")


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server for this test, stopped and removed afterwards."""
    server = RedisServer().start()
    yield server
    server.cleanup()


PLUGIN_FIXTURES = TESTS / "plugins" / "fixtures"


@pytest.fixture(scope="session")
def third_party_plugins() -> None:
    """Install the test directory's third-party plugins into the running environment with pip,
    the way a platform team installs a plugin package next to TaskSync. Always reinstalled: a
    copy left from an older checkout would test stale code."""
    for package in ("tasksync-toast-fr", "tasksync-faulty"):
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
             str(PLUGIN_FIXTURES / package)],
            check=True,
        )
