"""bench.operator_scale's pure pieces: reading the operator's reconcile histograms."""

from __future__ import annotations

import pytest
from bench.operator_scale import over, quantile

#: cumulative (upper bound, count), as Prometheus exposes a histogram: 10 passes
BUCKETS = [(0.5, 4.0), (1.0, 8.0), (1.25, 9.0), (2.0, 10.0), (float("inf"), 10.0)]


def test_quantile_interpolates_inside_the_bucket_that_holds_the_rank() -> None:
    assert quantile(BUCKETS, 0.5) == pytest.approx(0.5 + 0.5 * (1 / 4))  # rank 5: 1 of 4 in (0.5, 1]
    assert quantile(BUCKETS, 0.4) == pytest.approx(0.5)  # rank 4: the top of the first bucket
    assert quantile(BUCKETS, 0.95) == pytest.approx(1.25 + 0.75 * 0.5)  # rank 9.5 in (1.25, 2]
    assert quantile([(1.0, 0.0), (float("inf"), 3.0)], 0.99) == 1.0  # only +Inf above: its low bound


def test_over_counts_the_observations_above_a_bucket_bound() -> None:
    assert over(BUCKETS, 1.0) == 2.0
    assert over(BUCKETS, 0.5) == 6.0
    assert over(BUCKETS, 2.0) == 0.0
    with pytest.raises(ValueError, match=r"0\.9 is not a bucket bound"):
        over(BUCKETS, 0.9)
