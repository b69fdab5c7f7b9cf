"""Which of a few repeated measurements counts (bench/harness.py `median`)."""

from __future__ import annotations

from bench.harness import median


def test_the_middle_measurement_counts_and_one_without_a_value_ranks_last():
    assert median([{"s": 3.0}, {"s": 1.0}, {"s": 2.0}], "s") == {"s": 2.0}
    # A storm run in which 99 % never came back is the slowest, not a missing one.
    assert median([{"s": None}, {"s": 5.0}, {"s": 1.0}], "s") == {"s": 5.0}
