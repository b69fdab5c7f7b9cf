"""Fixtures of the chart tests: the real tools, installed when missing."""

from __future__ import annotations

import importlib

import pytest

from tests.chart.charttools import Helm, Tools, ensure_tools

# Runs as pytest enters tests/chart, before it imports the test modules: they import
# kubernetes_validate, which the script installs when missing, and building helm the first time
# takes minutes that must not count against any test's timeout.
TOOLS = ensure_tools()
importlib.invalidate_caches()


@pytest.fixture(scope="session")
def tools() -> Tools:
    return TOOLS


@pytest.fixture(scope="session")
def helm(tools: Tools) -> Helm:
    return Helm(tools.helm)
