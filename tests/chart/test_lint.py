"""`helm lint --strict`: with the chart's defaults and with a production-like values file."""

from __future__ import annotations

from tests.chart.charttools import PRODUCTION_VALUES, Helm


def test_lint_strict_with_default_values(helm: Helm) -> None:
    out = helm.lint()
    assert "1 chart(s) linted, 0 chart(s) failed" in out


def test_lint_strict_with_production_values(helm: Helm) -> None:
    out = helm.lint(files=(PRODUCTION_VALUES,))
    assert "1 chart(s) linted, 0 chart(s) failed" in out
