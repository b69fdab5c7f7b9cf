"""The shared test helpers behave as the tests that use them assume."""

from __future__ import annotations

import sys

import pytest

from tests.support.processes import ProcessExited, start_until_ready
from tests.support.waiting import eventually


def test_a_process_that_exits_before_it_is_ready_fails_with_its_log(tmp_path):
    log_path = tmp_path / "quitter.log"
    # A deadline far beyond the test's run: only the exit check can end the wait this early.
    with pytest.raises(ProcessExited, match=r"quitter exited with 3:\nbye"):
        start_until_ready(
            [sys.executable, "-c", "print('bye'); raise SystemExit(3)"],
            name="quitter",
            ready=lambda: False,
            log_path=log_path,
            timeout=600,
        )


async def test_eventually_waits_for_a_truthy_answer_or_for_asserts_to_pass():
    answers = iter([0, None, "yes"])
    assert await eventually(lambda: next(answers), timeout=30, interval=0) == "yes"

    attempts: list[int] = []

    async def asserting_probe() -> None:
        attempts.append(1)
        assert len(attempts) >= 3, attempts

    assert await eventually(asserting_probe, timeout=30, interval=0, truthy=False) is None
    assert len(attempts) == 3
