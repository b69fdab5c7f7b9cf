"""Fixtures shared by every test: real services on free loopback ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.support.redis_server import RedisServer
from tests.support.servers import ServiceProcess


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
