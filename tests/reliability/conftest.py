"""The reliability suite's report: every scenario records what it held, injected and tried,
and the session writes one Markdown table to test-artifacts/reliability-report.md."""

from __future__ import annotations

from pathlib import Path

import pytest

REPORT = Path(__file__).parents[2] / "test-artifacts" / "reliability-report.md"
COLUMNS = ("scenario", "load held", "faults injected", "inputs tried", "events lost", "cross-user frames", "notes")


class Report:
    def __init__(self) -> None:
        self.rows: list[dict[str, object]] = []

    def record(self, scenario: str, **values: object) -> None:
        self.rows.append({"scenario": scenario, **values})

    def markdown(self) -> str:
        lines = [
            "# Reliability report",
            "",
            (
                "Written by the test suite (tests/reliability/). Every row is a scenario that ran and passed its "
                "assertions."
            ),
            "",
            "| " + " | ".join(COLUMNS) + " |",
            "|" + "---|" * len(COLUMNS),
        ]
        for row in self.rows:
            lines.append("| " + " | ".join(str(row.get(column, "")) for column in COLUMNS) + " |")
        return "\n".join(lines) + "\n"


_report = Report()


@pytest.fixture(scope="session")
def report() -> Report:
    return _report


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _report.rows:
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text(_report.markdown())
        print(f"\nreliability report: {REPORT}")
