"""bench.operator_scale's pure pieces: reading the operator's reconcile histograms and CPU times."""

from __future__ import annotations

import pytest
from bench.operator_scale import Sent, busy_seconds, cpu_seconds, first_pass_rounds, over, owner_of, quantile

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


def test_cpu_seconds_reads_utime_and_stime_also_after_a_name_with_spaces_and_parentheses() -> None:
    # /proc/<pid>/stat: pid (comm) state ppid ... utime (14th) stime (15th) ...
    stat = "4242 (kube (api) server) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 12 0 9 0 0"
    assert cpu_seconds(stat, 100) == pytest.approx(3.0)


def test_busy_seconds_leaves_out_idle_iowait_steal_and_guest() -> None:
    # cpu  user nice system idle iowait irq softirq steal guest guest_nice
    stat = "cpu  100 20 30 900 50 5 5 7 40 0\ncpu0 50 10 15 450 25 2 3 0 0 0\n"
    assert busy_seconds(stat, 100) == pytest.approx(1.6)


def test_first_pass_rounds_splits_a_pass_at_its_first_write_and_ends_at_the_next_read() -> None:
    sent = [
        # round 1: the reads and the dry runs, side by side
        Sent(10.0, 10.1, "list", "pods", False),
        Sent(10.0, 10.3, "patch", "services", True),
        Sent(10.01, 10.2, "create", "secrets", True),
        # round 2: the writes, 0.05 s after round 1's last answer
        Sent(10.35, 10.5, "create", "secrets", False),
        Sent(10.35, 11.2, "patch", "services", False),
        Sent(10.36, 10.6, "patch", "deployments", False),
        # a resync a minute later: its reads end the first pass, and its writes are not counted
        Sent(70.0, 70.01, "list", "pods", False),
        Sent(70.1, 75.0, "patch", "deployments", False),
    ]
    rounds = first_pass_rounds(list(reversed(sent)))  # in any order
    assert rounds == {
        "total": pytest.approx(1.2),
        "round1": pytest.approx(0.3),
        "between": pytest.approx(0.05),
        "round2": pytest.approx(0.85),
        "slowest_write": "services",
    }
    assert first_pass_rounds(sent[:3]) is None  # nothing written


def test_owner_of_finds_the_resource_by_child_name_or_by_the_listing_selector() -> None:
    names = ["svc-0001", "svc-0010", "svc-00100"]
    secret = {"objectRef": {"resource": "secrets", "name": "svc-0010-admin"}}
    assert owner_of(secret, names) == "svc-0010"
    assert owner_of({"objectRef": {"resource": "services", "name": "svc-00100"}}, names) == "svc-00100"
    listing = {
        "objectRef": {"resource": "pods", "namespace": "apps"},
        "requestURI": "/api/v1/namespaces/apps/pods?labelSelector=app.kubernetes.io%2Fcomponent%3Dengine"
        "%2Capp.kubernetes.io%2Finstance%3Dsvc-0001%2Capp.kubernetes.io%2Fname%3Darctic-serve"
        "&resourceVersion=0",
    }
    assert owner_of(listing, names) == "svc-0001"
    assert owner_of({"objectRef": {"resource": "arcticinferenceservices", "name": "svc-0001"}}, names) is None
    assert owner_of({"objectRef": {"resource": "events", "name": "svc-0001.1"}}, names) is None
