"""control.replicas: the replica policy, by example (spikes, sustained load, lulls, loading pods,
cooldowns, dead metrics) and by property (bounds, no flapping, monotone in the queue)."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Iterable

from hypothesis import given, settings
from hypothesis import strategies as st

from arctic_operator.api import AutoscalingSpec
from arctic_operator.control.replicas import (
    ReplicaDecision,
    ReplicaObservation,
    ReplicaPolicy,
    ReplicaState,
    decide_replicas,
    growth_ahead,
    load_in_replicas,
)
from tests.operator.hypo import examples

TICK = 5.0
POLICY = ReplicaPolicy(min_replicas=1, max_replicas=10, waiting_per_replica=5.0)
"""5 waiting per replica; 60 s up window, 300 s down window, 30 s / 120 s cooldowns, 10 % band."""


def observe(
    time: float,
    current: int,
    waiting: float = 0.0,
    running: float = 0.0,
    *,
    ready: int | None = None,
    loading: int = 0,
    observed: int | None = None,
    kv: float | None = None,
) -> ReplicaObservation:
    ready = current if ready is None else ready
    return ReplicaObservation(
        time=time,
        current=current,
        ready=ready,
        loading=loading,
        observed=ready if observed is None else observed,
        waiting_total=waiting,
        running_total=running,
        kv_cache_usage_mean=kv,
    )


def simulate(
    policy: ReplicaPolicy,
    current: int,
    load: Callable[[float], float],
    until: float,
    *,
    start: float = 0.0,
    loading: int = 0,
    state: ReplicaState | None = None,
) -> list[ReplicaDecision]:
    """Ticks every TICK seconds from ``start`` to ``until``; ``load(t)`` is the waiting total; each
    decision is applied at once (the new replicas are ready and report metrics)."""
    state = ReplicaState() if state is None else state
    decisions = []
    time = start
    while time <= until:
        decision, state = decide_replicas(policy, observe(time, current, load(time), loading=loading), state)
        decisions.append(decision)
        current = decision.desired
        time += TICK
    return decisions


def changes(decisions: Iterable[ReplicaDecision]) -> list[tuple[float, int, int]]:
    return [(d.time, d.current, d.desired) for d in decisions if d.changed]


# --- examples ---------------------------------------------------------------------------------


def test_a_spike_shorter_than_the_scale_up_window_adds_nothing() -> None:
    def load(t: float) -> float:
        return 40.0 if 300 <= t < 350 else 5.0  # 8 replicas' worth for 50 s of a 60 s window

    decisions = simulate(POLICY, 1, load, until=900)
    assert changes(decisions) == []
    assert {d.reason for d in decisions if 300 <= d.time < 350} == {"Stabilizing"}


def test_sustained_load_scales_up_within_the_window() -> None:
    decisions = simulate(POLICY, 1, lambda t: 20.0 if t >= 300 else 5.0, until=600)
    [(when, before, after)] = changes(decisions)
    assert 300 + 60 - TICK <= when <= 300 + 60 + TICK
    assert (before, after) == (1, 4)
    up = next(d for d in decisions if d.changed)
    assert up.reason == "ScaleUp"
    assert up.message == "Scaling up from 1 to 4 replicas: the load (waiting) needs 4.00 replicas for 60s."
    assert up.inputs["waitingTotal"] == 20.0 and up.inputs["recommendation"] == 4


def test_scale_up_is_limited_per_step_and_by_its_cooldown() -> None:
    policy = ReplicaPolicy(min_replicas=1, max_replicas=50, waiting_per_replica=5.0, scale_up_window_s=0)
    decisions = simulate(policy, 2, lambda t: 200.0, until=120)  # needs 40
    assert changes(decisions) == [(0, 2, 6), (30, 6, 12), (60, 12, 24), (90, 24, 40)]
    assert {d.reason for d in decisions if 0 < d.time < 30} == {"Cooldown"}


def test_scale_down_waits_for_the_down_window_then_goes_one_at_a_time() -> None:
    decisions = simulate(POLICY, 4, lambda t: 5.0 if t >= 400 else 20.0, until=1000)
    assert changes(decisions) == [(700, 4, 3), (820, 3, 2), (940, 2, 1)]  # 300 s window, 120 s cooldown
    assert {d.reason for d in decisions if 400 <= d.time < 700} == {"Stabilizing"}
    assert {d.reason for d in decisions if 700 < d.time < 820} == {"Cooldown"}


def test_no_scale_down_while_pods_are_loading() -> None:
    decisions = simulate(POLICY, 4, lambda t: 0.0, until=900, loading=1, state=ReplicaState(((-1000, 4),)))
    assert changes(decisions) == []
    assert {d.reason for d in decisions} == {"PodsLoading"}
    assert decisions[0].message == (
        "Holding 4 replicas: the load (waiting) needs 0.00 replicas, but 1 pods are still loading."
    )


def test_loading_pods_do_not_block_a_scale_up() -> None:
    decisions = simulate(POLICY, 2, lambda t: 30.0, until=120, loading=1)
    assert changes(decisions)[0][1:] == (2, 6)


def test_a_fresh_controller_waits_for_a_whole_window_either_way() -> None:
    up = simulate(POLICY, 1, lambda t: 50.0, until=120)
    assert changes(up)[0][0] == 60
    down = simulate(POLICY, 5, lambda t: 0.0, until=400)
    assert changes(down)[0][0] == 300


def test_dead_metrics_hold_everything() -> None:
    history = ReplicaState(((-1000, 1),))  # long low load: a scale-down is due
    decision, state = decide_replicas(POLICY, observe(0, 4, ready=4, observed=0), history)
    assert (decision.desired, decision.reason, decision.recommendation) == (4, "NoMetrics", None)
    assert decision.message == "No metrics from any of the 4 ready pods: holding 4 replicas."
    assert state.recommendations == history.recommendations  # nothing recorded
    decision, _ = decide_replicas(POLICY, observe(0, 4, waiting=0, ready=4, observed=3), history)
    assert (decision.desired, decision.reason) == (4, "MetricsIncomplete")


def test_partial_metrics_never_vote_for_a_later_scale_down() -> None:
    state = ReplicaState(((-1000, 4),))
    for time in range(0, 600, 5):  # one pod of four silent for 10 minutes, the others idle
        decision, state = decide_replicas(POLICY, observe(time, 4, ready=4, observed=3), state)
        assert not decision.changed
    decision, state = decide_replicas(POLICY, observe(600, 4, 0.0), state)  # all back, idle
    assert (decision.desired, decision.reason) == (4, "Stabilizing")


def test_partial_metrics_may_scale_up() -> None:
    policy = ReplicaPolicy(min_replicas=1, max_replicas=10, waiting_per_replica=5.0, scale_up_window_s=0)
    decision, _ = decide_replicas(policy, observe(0, 2, 30.0, ready=2, observed=1), ReplicaState())
    assert (decision.desired, decision.reason) == (6, "ScaleUp")
    assert "by the 1 of 2 ready pods with metrics" in decision.message


def test_no_ready_pods_holds() -> None:
    decision, _ = decide_replicas(POLICY, observe(0, 3, ready=0, loading=3), ReplicaState())
    assert (decision.desired, decision.reason) == (3, "NoReadyPods")


def test_out_of_range_moves_into_range_at_once() -> None:
    policy = ReplicaPolicy(min_replicas=2, max_replicas=5, waiting_per_replica=5.0)
    low, _ = decide_replicas(policy, observe(0, 1, ready=0, loading=1), ReplicaState(last_change=0))
    assert (low.desired, low.reason) == (2, "BelowMinimum")
    high, state = decide_replicas(policy, observe(0, 9, 100.0, loading=2), ReplicaState(last_change=0))
    assert (high.desired, high.reason, state.last_change) == (5, "AboveMaximum", 0)


def test_at_the_bounds_the_reason_says_so() -> None:
    policy = ReplicaPolicy(min_replicas=2, max_replicas=5, waiting_per_replica=5.0)
    decision, _ = decide_replicas(policy, observe(0, 5, 500.0), ReplicaState(((-100, 5),)))
    assert (decision.desired, decision.reason, decision.recommendation) == (5, "AtMaximum", 5)
    decision, _ = decide_replicas(policy, observe(0, 2, 0.0), ReplicaState(((-1000, 2),)))
    assert (decision.desired, decision.reason) == (2, "AtMinimum")


def test_the_largest_target_wins_and_kv_cache_counts_ready_pods() -> None:
    policy = ReplicaPolicy(
        min_replicas=1,
        max_replicas=20,
        waiting_per_replica=5.0,
        running_per_replica=8.0,
        kv_cache_usage=0.6,
        scale_up_window_s=0,
    )
    decision, _ = decide_replicas(policy, observe(0, 4, 10.0, 40.0, kv=0.9), ReplicaState())
    assert decision.inputs["needs"] == {"waiting": 2.0, "running": 5.0, "kvCacheUsage": 6.0}
    assert (decision.recommendation, decision.desired) == (6, 6)
    assert "the load (kvCacheUsage) needs 6.00 replicas" in decision.message


def test_within_tolerance_holds_and_records_the_current_count() -> None:
    decision, state = decide_replicas(POLICY, observe(0, 4, 21.0), ReplicaState())
    assert (decision.desired, decision.reason, decision.recommendation) == (4, "WithinTolerance", 4)
    assert state.recommendations == ((0, 4),)


def test_from_spec() -> None:
    spec = AutoscalingSpec.model_validate(
        {
            "minReplicas": 2,
            "maxReplicas": 8,
            "targets": {"runningRequestsPerReplica": 32},
            "scaleUp": {"stabilizationWindowSeconds": 30},
            "scaleDown": {"stabilizationWindowSeconds": 600},
        }
    )
    policy = ReplicaPolicy.from_spec(spec)
    assert (policy.min_replicas, policy.max_replicas) == (2, 8)
    assert (policy.waiting_per_replica, policy.running_per_replica, policy.kv_cache_usage) == (None, 32, None)
    assert (policy.scale_up_window_s, policy.scale_down_window_s) == (30, 600)
    defaults = ReplicaPolicy.from_spec(AutoscalingSpec.model_validate({"maxReplicas": 3}))
    assert (defaults.waiting_per_replica, defaults.kv_cache_usage) == (5, 0.8)


# --- properties -------------------------------------------------------------------------------


@st.composite
def policies(draw: st.DrawFn) -> ReplicaPolicy:
    low = draw(st.integers(1, 5))
    return ReplicaPolicy(
        min_replicas=low,
        max_replicas=draw(st.integers(low, 20)),
        waiting_per_replica=draw(st.sampled_from([None, 1.0, 5.0])),
        running_per_replica=draw(st.sampled_from([None, 8.0])),
        kv_cache_usage=draw(st.sampled_from([0.5, 0.8])),
        scale_up_window_s=draw(st.sampled_from([0.0, 30.0, 60.0])),
        scale_down_window_s=draw(st.sampled_from([0.0, 60.0, 300.0])),
        tolerance=draw(st.sampled_from([0.0, 0.1, 0.3])),
        scale_up_cooldown_s=draw(st.sampled_from([0.0, 30.0])),
        scale_down_cooldown_s=draw(st.sampled_from([0.0, 120.0])),
        max_scale_up_step=draw(st.integers(1, 4)),
        max_scale_down_step=draw(st.integers(1, 3)),
    )


@st.composite
def ticks(draw: st.DrawFn) -> tuple[float, float, float, float | None, int, int, int]:
    """(dt, waiting, running, kv, loading, unready, unobserved)"""
    return (
        draw(st.floats(1, 60)),
        draw(st.floats(0, 200)),
        draw(st.floats(0, 200)),
        draw(st.none() | st.floats(0, 1)),
        draw(st.integers(0, 2)),
        draw(st.integers(0, 2)),
        draw(st.integers(0, 2)),
    )


def history(
    policy: ReplicaPolicy, current: int, steps: list[tuple[float, float]]
) -> tuple[int, ReplicaState]:
    """From ``current`` (moved into the policy's range), run the policy over (dt, waiting) steps;
    the replica count and state it ends with."""
    current = max(policy.min_replicas, min(policy.max_replicas, current))
    state, time = ReplicaState(), 0.0
    for dt, waiting in steps:
        time += dt
        decision, state = decide_replicas(policy, observe(time, current, waiting, waiting), state)
        current = decision.desired
    return current, state


@settings(max_examples=examples(150), deadline=None)
@given(policies(), st.integers(1, 25), st.lists(ticks(), min_size=1, max_size=40))
def test_replicas_stay_within_bounds(
    policy: ReplicaPolicy, current: int, steps: list[tuple[float, float, float, float | None, int, int, int]]
) -> None:
    state, time = ReplicaState(), 0.0
    for dt, waiting, running, kv, loading, unready, unobserved in steps:
        time += dt
        ready = max(0, current - unready)
        obs = observe(
            time,
            current,
            waiting,
            running,
            ready=ready,
            loading=loading,
            observed=max(0, ready - unobserved),
            kv=kv,
        )
        decision, state = decide_replicas(policy, obs, state)
        assert policy.min_replicas <= decision.desired <= policy.max_replicas
        assert decision.message and decision.reason
        current = decision.desired


@settings(max_examples=examples(150), deadline=None)
@given(
    policies(),
    st.integers(1, 20),
    st.lists(st.tuples(st.floats(1, 60), st.floats(0, 200)), max_size=30),
    st.floats(1, 60),
    st.floats(0, 200),
    st.integers(1, 20),
    st.integers(0, 19),
)
def test_a_dead_metrics_source_never_removes_capacity(
    policy: ReplicaPolicy,
    current: int,
    steps: list[tuple[float, float]],
    dt: float,
    waiting: float,
    ready: int,
    observed: int,
) -> None:
    current, state = history(policy, current, steps)
    time = sum(step[0] for step in steps) + dt
    observed = min(observed, ready - 1)
    decision, _ = decide_replicas(
        policy, observe(time, current, waiting, waiting, ready=ready, observed=observed), state
    )
    assert decision.desired >= current
    if observed == 0:
        assert decision.desired == current
        assert decision.reason == "NoMetrics"


@settings(max_examples=examples(150), deadline=None)
@given(
    policies(),
    st.integers(1, 20),
    st.lists(st.tuples(st.floats(1, 60), st.floats(0, 200)), max_size=30),
    st.floats(1, 60),
    st.floats(0, 200),
    st.floats(0, 200),
    st.floats(0, 200),
)
def test_more_waiting_never_means_fewer_replicas(
    policy: ReplicaPolicy,
    current: int,
    steps: list[tuple[float, float]],
    dt: float,
    waiting: float,
    more: float,
    running: float,
) -> None:
    current, state = history(policy, current, steps)
    time = sum(step[0] for step in steps) + dt
    less, _ = decide_replicas(policy, observe(time, current, waiting, running, kv=0.5), state)
    greater, _ = decide_replicas(policy, observe(time, current, waiting + more, running, kv=0.5), state)
    assert greater.desired >= less.desired


@settings(max_examples=examples(40), deadline=None)
@given(st.integers(1, 8), st.integers(1, 10), st.integers(0, 2**32 - 1))
def test_noisy_steady_load_does_not_flap(level: int, start: int, seed: int) -> None:
    """Load wobbling inside the tolerance band around ``level`` replicas' worth: from ``level``
    nothing ever changes; from elsewhere the count moves one way only and ends within one replica of
    ``level``."""
    noise = random.Random(seed)
    band = 0.9 * POLICY.tolerance

    def load(t: float) -> float:
        return 5.0 * level * (1 + noise.uniform(-band, band))

    assert changes(simulate(POLICY, level, load, until=3000)) == []
    moves = changes(simulate(POLICY, start, load, until=3000))
    directions = {after > before for _, before, after in moves}
    assert len(directions) <= 1
    assert len(moves) <= abs(start - level) + 1
    # settled next to ``level``: one replica short of it, the load may sit inside the band for good
    final = moves[-1][2] if moves else start
    assert abs(final - level) <= 1


# --- burst levers -----------------------------------------------------------------------------


def test_headroom_adds_spare_replicas_to_every_target() -> None:
    policy = ReplicaPolicy(min_replicas=1, max_replicas=10, waiting_per_replica=5.0, burst_headroom=1)
    obs = observe(0.0, 1, waiting=10.0)
    assert load_in_replicas(policy, obs) == {"waiting": 3.0}  # 10 / 5 + 1
    kv = ReplicaPolicy(min_replicas=1, max_replicas=10, kv_cache_usage=0.8, burst_headroom=2)
    assert load_in_replicas(kv, observe(0.0, 2, kv=0.4)) == {"kvCacheUsage": 3.0}  # 2 x 0.4 / 0.8 + 2
    decision, _ = decide_replicas(policy, observe(0.0, 1, waiting=0.0), ReplicaState())
    assert (decision.desired, decision.reason) == (1, "WithinTolerance")  # no load: the spare is the one
    decision, _ = decide_replicas(policy, observe(0.0, 2, waiting=6.0), ReplicaState(((-400.0, 3),), None))
    assert (decision.desired, decision.reason) == (3, "ScaleUp")  # 6 / 5 + 1 = 2.2 -> 3


def test_a_growing_load_scales_up_at_once() -> None:
    policy = ReplicaPolicy(
        min_replicas=1,
        max_replicas=10,
        running_per_replica=32.0,
        waiting_per_replica=5.0,
        queue_growth_lead_s=60.0,
    )
    obs = dataclasses.replace(observe(0.0, 1, waiting=0.0, running=20.0), waiting_growth=0.5)
    assert growth_ahead(policy, obs) == 30.0
    assert load_in_replicas(policy, obs) == {"waiting": 0.0, "running": 1.5625}  # (20 + 30) / 32
    decision, _ = decide_replicas(policy, obs, ReplicaState())  # no history: the window is not whole
    assert (decision.desired, decision.reason) == (2, "ScaleUp")
    assert decision.inputs["growthAhead"] == 30.0
    steady = dataclasses.replace(obs, waiting_growth=0.0)
    decision, _ = decide_replicas(policy, steady, ReplicaState())
    assert (decision.desired, decision.reason) == (1, "Steady")  # 20 / 32 rounds up to 1
    shrinking = dataclasses.replace(obs, running_total=40.0, waiting_growth=-1.0)
    assert growth_ahead(policy, shrinking) == 0.0
    decision, _ = decide_replicas(policy, shrinking, ReplicaState())
    assert (decision.desired, decision.reason) == (1, "Stabilizing")  # 40 / 32: needs the window
    off = dataclasses.replace(policy, queue_growth_lead_s=0.0)
    assert growth_ahead(off, obs) == 0.0
    waiting_only = ReplicaPolicy(
        min_replicas=1, max_replicas=10, waiting_per_replica=5.0, queue_growth_lead_s=10.0
    )
    assert load_in_replicas(waiting_only, obs) == {"waiting": 1.0}  # (0 + 5) / 5


def test_burst_levers_from_the_spec() -> None:
    spec = AutoscalingSpec.model_validate(
        {"maxReplicas": 4, "burst": {"queueGrowthLeadSeconds": 120, "headroomReplicas": 1}}
    )
    policy = ReplicaPolicy.from_spec(spec)
    assert (policy.queue_growth_lead_s, policy.burst_headroom) == (120.0, 1)
    defaults = ReplicaPolicy.from_spec(AutoscalingSpec.model_validate({"maxReplicas": 4}))
    assert (defaults.queue_growth_lead_s, defaults.burst_headroom) == (0.0, 0)


def test_a_tiny_target_or_a_huge_queue_stays_within_the_maximum() -> None:
    # a target of 1e-9 waiting per replica (or 1e300 waiting) makes the need astronomically large:
    # it is clamped before rounding, so the decision is the maximum, not an overflow or a crash
    tiny = ReplicaPolicy(min_replicas=1, max_replicas=4, waiting_per_replica=1e-9)
    decisions = simulate(tiny, 1, lambda t: 1e300, until=600.0)
    assert max(d.desired for d in decisions) == 4
    assert decisions[-1].desired == 4


# --- exact decisions on worked examples (what mutation testing showed the tests above let through) ---


def test_cooldown_messages_quote_the_seconds_since_the_last_change() -> None:
    policy = ReplicaPolicy(min_replicas=1, max_replicas=10, waiting_per_replica=5.0, scale_up_window_s=0)
    # up: changed at 10, now 25: 15 s of the 30 s cooldown
    decision, _ = decide_replicas(policy, observe(25.0, 2, 30.0), ReplicaState(last_change=10.0))
    assert (decision.desired, decision.reason) == (2, "Cooldown")
    assert decision.message == (
        "Holding 2 replicas: the load (waiting) needs 6.00 replicas, but the last change was 15s ago "
        "(scale-up cooldown 30s)."
    )
    # down: a whole window of low load, changed at 50, now 150: 100 s of the 120 s cooldown
    low = ReplicaState(((-400.0, 1),), last_change=50.0)
    decision, _ = decide_replicas(POLICY, observe(150.0, 4, 0.0), low)
    assert (decision.desired, decision.reason) == (4, "Cooldown")
    assert decision.message == (
        "Holding 4 replicas: the load (waiting) needs 0.00 replicas, but the last change was 100s ago "
        "(scale-down cooldown 120s)."
    )


def test_a_scale_down_long_after_the_last_change_goes_at_once() -> None:
    low = ReplicaState(((-400.0, 3),), last_change=-1000.0)
    decision, state = decide_replicas(POLICY, observe(0.0, 4, 10.0), low)
    assert (decision.desired, decision.reason, decision.recommendation) == (3, "ScaleDown", 2)
    assert decision.message == (
        "Scaling down from 4 to 3 replicas: the load (waiting) needs 2.00 replicas for 300s."
    )
    assert state == ReplicaState(((-400.0, 3), (0.0, 2)), last_change=0.0)
    # the window's largest is 1: one at a time, and the message says so
    lower = ReplicaState(((-400.0, 1),), last_change=-1000.0)
    decision, _ = decide_replicas(POLICY, observe(0.0, 4, 0.0), lower)
    assert (decision.desired, decision.reason) == (3, "ScaleDown")
    assert decision.message == (
        "Scaling down from 4 to 3 replicas (at most 1 fewer per step): the load (waiting) needs 0.00 "
        "replicas for 300s."
    )


def test_missing_metrics_message_counts_the_silent_pods() -> None:
    decision, _ = decide_replicas(
        POLICY, observe(0.0, 4, 0.0, ready=4, observed=3), ReplicaState(((-1000, 1),))
    )
    assert (decision.desired, decision.reason, decision.recommendation) == (4, "MetricsIncomplete", 1)
    assert decision.message == (
        "Holding 4 replicas: the load (waiting) needs 0.00 replicas by the 3 of 4 ready pods with "
        "metrics, but 1 ready pods have no metrics."
    )


def test_history_keeps_only_the_recommendation_in_effect_at_the_longest_windows_start() -> None:
    old = ReplicaState(((-1000.0, 1), (-900.0, 2), (-800.0, 3), (-100.0, 4)))
    _, state = decide_replicas(POLICY, observe(0.0, 4, 20.0), old)  # keeps 300 s (the down window)
    assert state.recommendations == ((-800.0, 3), (-100.0, 4), (0.0, 4))


def test_needs_are_reported_to_three_decimals() -> None:
    decision, _ = decide_replicas(POLICY, observe(0.0, 1, 6.17), ReplicaState())
    assert decision.inputs["needs"] == {"waiting": 1.234}
    assert decision.inputs["waitingTotal"] == 6.17
