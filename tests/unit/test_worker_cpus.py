"""`make test`'s parallel workers each keep to their own CPUs (tests/conftest.py)."""

from __future__ import annotations

from tests.conftest import worker_cpus


def test_workers_get_disjoint_contiguous_shares_the_last_takes_the_rest() -> None:
    cpus = [0, 1, 2, 3, 4, 5, 6]
    shares = [worker_cpus(f"gw{i}", 3, cpus) for i in range(3)]
    assert shares == [[0, 1], [2, 3], [4, 5, 6]]
    assert worker_cpus("gw0", 2, [0, 1]) == [0] and worker_cpus("gw1", 2, [0, 1]) == [1]


def test_fewer_cpus_than_workers_share_them_all() -> None:
    assert worker_cpus("gw1", 2, [3]) == [3]
