"""occaist.utils.timing: the benchmarks' median timer."""

from __future__ import annotations

import time

from occaist.utils.timing import median_seconds


def test_median_seconds_calls_warmup_plus_repeats_and_ignores_one_slow_call() -> None:
    calls = []

    def fn() -> None:
        calls.append(None)
        time.sleep(0.2 if len(calls) == 3 else 0.01)  # one slow timed call of five

    t = median_seconds(fn, repeats=5, warmup=2)
    assert len(calls) == 7
    assert 0.009 <= t < 0.04  # the median, not the mean (0.048) nor the max
