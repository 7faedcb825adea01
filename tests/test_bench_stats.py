"""The bench's small helpers (bench/stats.py)."""

from bench.stats import per_second, percentile


def test_per_second_counts_each_whole_second_after_the_start():
    assert per_second([10.1, 10.9, 11.0, 13.5], 10.0) == [2, 1, 0, 1]


def test_per_second_puts_times_before_the_start_in_the_first_second():
    assert per_second([9.5, 10.2], 10.0) == [2]


def test_per_second_of_nothing_is_empty():
    assert per_second([], 0.0) == []


def test_percentile_is_nearest_rank():
    assert percentile([5, 1, 4, 2, 3], 50) == 3
    assert percentile([], 50) is None
