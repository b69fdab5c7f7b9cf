"""Fixtures of the chart tests: the real tools, installed before the first test runs."""

from __future__ import annotations

import pytest

from tests.chart.charttools import Helm, Tools, ensure_tools

TOOLS = pytest.StashKey[Tools]()


def pytest_collection_finish(session: pytest.Session) -> None:
    # Install the tools before the first test starts: building helm takes minutes the first
    # time and must not count against any test's timeout.
    if any("tools" in getattr(item, "fixturenames", ()) for item in session.items):
        session.config.stash[TOOLS] = ensure_tools()


@pytest.fixture(scope="session")
def tools(request: pytest.FixtureRequest) -> Tools:
    return request.config.stash[TOOLS]


@pytest.fixture(scope="session")
def helm(tools: Tools) -> Helm:
    return Helm(tools.helm)
