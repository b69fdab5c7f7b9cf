"""Fixtures for the delivery tests: the service on either broker."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["memory", "redis"])
def broker_service(request, start_service):
    """`start(*flags)` starts the service on the memory broker or on a real Redis."""
    if request.param == "memory":
        return lambda *flags: start_service("--dev", *flags)
    redis_server = request.getfixturevalue("redis_server")
    return lambda *flags: start_service("--dev", "--broker", redis_server.url, *flags)
