"""control.cap: the speculation-cap policy, by example (break-even size, queue pressure,
hysteresis, dwell, step limits, unknown acceptance, dead metrics) and by property (bounds, no
flapping, monotone in the queue)."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arctic_operator.api import SpeculationSpec
from arctic_operator.control.cap import (
    CapDecision,
    CapObservation,
    CapPolicy,
    CapState,
    VerifyCostModel,
    break_even_batch,
    decide_cap,
    queue_factor,
)

POLICY = CapPolicy(min_cap=1, max_cap=64)
"""Default cost model (H100, 8B, k=3), margin 0.1, hard = 2 x soft, 20 % hysteresis, 30 s dwell."""


def observe(
    time: float,
    running: float = 8.0,
    waiting: float = 0.0,
    accepted_per_draft: float | None = 0.6,
    *,
    complete: bool = True,
    effective: tuple[int | None, int | None] = (None, None),
) -> CapObservation:
    return CapObservation(
        time=time,
        running=running,
        waiting=waiting,
        accepted_per_draft=accepted_per_draft,
        effective_soft_cap=effective[0],
        effective_hard_cap=effective[1],
        complete=complete,
    )


def settled(soft: int, policy: CapPolicy = POLICY, at: float = -1000.0, accepted: float = 0.6) -> CapState:
    """A state as the policy leaves it: ``soft`` set long ago."""
    return CapState(soft, policy.hard_for(soft), at, accepted)


# --- the cost model and the break-even size ---------------------------------------------------


def test_cost_interpolates_in_log_batch_and_is_flat_outside() -> None:
    model = VerifyCostModel()
    assert model.cost(0.5) == model.cost(1) == 1.26
    assert model.cost(2) == pytest.approx(1.295)  # halfway from 1 to 4 in log
    assert model.cost(8) == pytest.approx(1.355)
    assert model.cost(64) == model.cost(1000) == 1.67


def test_cost_model_rejects_inconsistent_points() -> None:
    with pytest.raises(ValueError, match="same length"):
        VerifyCostModel(batch_sizes=(1, 4), cost_ratios=(1.2,))
    with pytest.raises(ValueError, match="increasing"):
        VerifyCostModel(batch_sizes=(4, 1), cost_ratios=(1.2, 1.3))


@pytest.mark.parametrize(
    ("max_cap", "accepted", "expected"),
    [
        (64, 0.6, 22),  # 1.6 / cost(b) >= 1.1 up to cost 1.4545, between 16 and 64
        (64, 0.45, 3),
        (64, 0.3, 0),  # does not pay even alone
        (64, 2.0, 64),
        (200, 2.0, 200),  # the cost is flat beyond 64: pays at any size
        (10, 0.6, 10),
        (0, 2.0, 0),
    ],
)
def test_break_even_batch(max_cap: int, accepted: float, expected: int) -> None:
    assert break_even_batch(CapPolicy(min_cap=0, max_cap=max_cap), accepted) == expected


def test_queue_factor() -> None:
    assert queue_factor(0, 0) == 1
    assert queue_factor(8, 0) == 1
    assert queue_factor(8, 8) == 0.5
    assert queue_factor(0, 8) == 0


# --- decisions --------------------------------------------------------------------------------


def test_the_first_decision_applies_at_once() -> None:
    decision, state = decide_cap(POLICY, observe(0, effective=(None, None)), CapState())
    assert (decision.soft_cap, decision.hard_cap, decision.reason) == (22, 44, "Initial")
    assert (decision.previous_soft_cap, decision.previous_hard_cap) == (None, None)
    assert decision.changed
    assert (
        decision.message == "Soft cap None -> 22: drafting pays up to 22 running at 0.60 accepted per draft."
    )
    assert decision.inputs["breakEvenBatch"] == 22
    assert state == CapState(22, 44, 0, 0.6)


def test_an_engine_already_at_the_target_is_not_pushed_again() -> None:
    decision, _ = decide_cap(POLICY, observe(0, effective=(22, 44)), CapState())
    assert decision.soft_cap == 22 and not decision.changed


def test_without_any_acceptance_the_first_cap_is_optimistic_then_held() -> None:
    decision, state = decide_cap(POLICY, observe(0, accepted_per_draft=None), CapState())
    assert (decision.soft_cap, decision.hard_cap, decision.reason) == (64, 128, "Optimistic")
    decision, state = decide_cap(POLICY, observe(100, accepted_per_draft=None), state)
    assert (decision.soft_cap, decision.reason, decision.changed) == (64, "AcceptanceUnknown", False)


def test_the_last_measured_acceptance_is_used_while_nothing_drafts() -> None:
    state = CapState(64, 128, -1000, last_accepted_per_draft=0.45)
    decision, state = decide_cap(POLICY, observe(0, accepted_per_draft=None), state)
    # 64 -> 3 wanted; the step limit halves it
    assert (decision.soft_cap, decision.reason) == (32, "Lowered")
    assert decision.inputs["acceptedPerDraftUsed"] == 0.45
    assert state.last_accepted_per_draft == 0.45


def test_a_queue_lowers_the_cap() -> None:
    decision, _ = decide_cap(POLICY, observe(0, running=20, waiting=20), settled(22))
    assert (decision.soft_cap, decision.hard_cap, decision.reason) == (11, 22, "QueuePressure")
    assert decision.message == (
        "Soft cap 22 -> 11: drafting pays up to 22 running at 0.60 accepted per draft, x0.50 for 20 waiting."
    )


def test_poor_acceptance_lowers_the_cap_and_good_acceptance_raises_it() -> None:
    decision, _ = decide_cap(POLICY, observe(0, accepted_per_draft=0.45), settled(4))
    assert (decision.soft_cap, decision.reason) == (3, "Lowered")
    decision, _ = decide_cap(POLICY, observe(0, accepted_per_draft=0.6), settled(4))
    assert (decision.soft_cap, decision.reason) == (8, "Raised")  # 22 wanted, x2 per step
    assert decision.message.startswith("Soft cap 4 -> 8 (step limit; target 22): ")


def test_drafting_that_never_pays_goes_down_to_the_minimum() -> None:
    state = settled(64)
    changes = []
    for time in range(0, 300, 5):
        decision, state = decide_cap(POLICY, observe(time, accepted_per_draft=0.1), state)
        if decision.changed:
            changes.append((time, decision.soft_cap))
    assert changes == [(0, 32), (30, 16), (60, 8), (90, 4), (120, 2), (150, 1)]  # halving, 30 s dwell
    assert state.soft_cap == 1 and state.hard_cap == 2


def test_small_changes_are_ignored() -> None:
    decision, state = decide_cap(POLICY, observe(0, running=20, waiting=2), settled(22))
    assert (decision.soft_cap, decision.reason, decision.changed) == (22, "WithinHysteresis", False)
    assert state == settled(22)


def test_no_change_within_the_dwell_time() -> None:
    decision, state = decide_cap(POLICY, observe(0, running=10, waiting=30), settled(22, at=-10))
    assert (decision.soft_cap, decision.reason) == (22, "Dwell")
    decision, _ = decide_cap(POLICY, observe(20, running=10, waiting=30), state)
    assert (decision.soft_cap, decision.reason) == (11, "QueuePressure")  # 5.5 wanted, step limit


def test_incomplete_metrics_change_nothing() -> None:
    state = settled(22)
    decision, after = decide_cap(
        POLICY, observe(0, running=100, waiting=500, accepted_per_draft=0.1, complete=False), state
    )
    assert (decision.soft_cap, decision.hard_cap, decision.reason) == (22, 44, "MetricsIncomplete")
    assert not decision.changed and after == state
    first, after = decide_cap(POLICY, observe(0, complete=False, effective=(None, None)), CapState())
    assert (first.soft_cap, first.changed, after) == (None, False, CapState())


def test_caps_outside_the_bounds_move_in_at_once() -> None:
    policy = CapPolicy(min_cap=1, max_cap=16)
    decision, _ = decide_cap(policy, observe(0), settled(64, at=-1))  # in dwell, far above
    assert (decision.soft_cap, decision.hard_cap, decision.reason) == (16, 32, "OutOfBounds")


def test_the_hard_cap_limit_bounds_both_caps() -> None:
    policy = CapPolicy(min_cap=1, max_cap=64, hard_cap_limit=30)
    decision, _ = decide_cap(policy, observe(0), CapState())
    assert (decision.soft_cap, decision.hard_cap) == (22, 30)
    tight = CapPolicy(min_cap=8, max_cap=64, hard_cap_limit=4)
    decision, _ = decide_cap(tight, observe(0), CapState())
    assert (decision.soft_cap, decision.hard_cap) == (4, 4)


def test_from_spec() -> None:
    spec = SpeculationSpec.model_validate(
        {"method": "ngram", "hardCap": 48, "capController": {"enabled": True, "min": 2, "max": 32}}
    )
    policy = CapPolicy.from_spec(spec)
    assert (policy.min_cap, policy.max_cap, policy.hard_cap_limit) == (2, 32, 48)
    assert CapPolicy.from_spec(SpeculationSpec()).hard_cap_limit is None


# --- properties -------------------------------------------------------------------------------


@st.composite
def policies(draw: st.DrawFn) -> CapPolicy:
    low = draw(st.integers(0, 8))
    return CapPolicy(
        min_cap=low,
        max_cap=draw(st.integers(low, 128)),
        hard_cap_limit=draw(st.none() | st.integers(0, 200)),
        hard_factor=draw(st.sampled_from([1.0, 1.5, 2.0, 3.0])),
        margin=draw(st.sampled_from([0.0, 0.1, 0.3])),
        hysteresis=draw(st.sampled_from([0.0, 0.2, 0.5])),
        dwell_s=draw(st.sampled_from([0.0, 30.0])),
        max_step_factor=draw(st.sampled_from([1.5, 2.0, 4.0])),
    )


@st.composite
def observations(draw: st.DrawFn, time: float) -> CapObservation:
    caps = st.none() | st.integers(0, 300)
    return CapObservation(
        time=time,
        running=draw(st.floats(0, 300)),
        waiting=draw(st.floats(0, 300)),
        accepted_per_draft=draw(st.none() | st.floats(0, 5)),
        effective_soft_cap=draw(caps),
        effective_hard_cap=draw(caps),
        complete=draw(st.booleans()),
    )


@st.composite
def runs(draw: st.DrawFn) -> tuple[CapPolicy, list[CapObservation]]:
    time, steps = 0.0, []
    for _ in range(draw(st.integers(1, 25))):
        time += draw(st.floats(1, 60))
        steps.append(draw(observations(time)))
    return draw(policies()), steps


def replay(
    policy: CapPolicy, steps: list[CapObservation]
) -> tuple[list[tuple[CapDecision, CapState]], CapState]:
    state, out = CapState(), []
    for obs in steps:
        decision, state = decide_cap(policy, obs, state)
        out.append((decision, state))
    return out, state


@settings(max_examples=200, deadline=None)
@given(runs())
def test_caps_stay_within_bounds(run: tuple[CapPolicy, list[CapObservation]]) -> None:
    policy, steps = run
    for decision, state in replay(policy, steps)[0]:
        if state.soft_cap is None:  # nothing set yet: nothing decided
            assert not decision.changed
            continue
        soft, hard = decision.soft_cap, decision.hard_cap
        assert soft is not None and hard is not None
        low = policy.min_cap if policy.hard_cap_limit is None else min(policy.min_cap, policy.hard_cap_limit)
        assert low <= soft <= policy.max_cap
        assert soft <= hard
        if policy.hard_cap_limit is not None:
            assert hard <= policy.hard_cap_limit
        assert decision.message and decision.reason


@settings(max_examples=200, deadline=None)
@given(runs(), st.floats(0, 300), st.floats(0, 300), st.floats(0, 300), st.none() | st.floats(0, 5))
def test_more_waiting_never_raises_the_cap(
    run: tuple[CapPolicy, list[CapObservation]],
    running: float,
    waiting: float,
    more: float,
    accepted: float | None,
) -> None:
    policy, steps = run
    _, state = replay(policy, steps)
    time = steps[-1].time + 5
    less, _ = decide_cap(policy, observe(time, running, waiting, accepted), state)
    greater, _ = decide_cap(policy, observe(time, running, waiting + more, accepted), state)
    assert less.soft_cap is not None and greater.soft_cap is not None
    assert greater.soft_cap <= less.soft_cap


@settings(max_examples=200, deadline=None)
@given(runs(), st.floats(0, 300), st.floats(0, 300), st.none() | st.floats(0, 5))
def test_a_dead_metrics_source_changes_nothing(
    run: tuple[CapPolicy, list[CapObservation]], running: float, waiting: float, accepted: float | None
) -> None:
    policy, steps = run
    _, state = replay(policy, steps)
    time = steps[-1].time + 1000  # long past any dwell
    decision, after = decide_cap(policy, observe(time, running, waiting, accepted, complete=False), state)
    assert not decision.changed
    assert decision.reason == "MetricsIncomplete"
    assert after == state


@settings(max_examples=60, deadline=None)
@given(
    st.floats(1, 200),
    st.floats(0, 2),
    st.floats(0, 3),
    st.integers(0, 2**32 - 1),
)
def test_noisy_steady_load_does_not_flap(running: float, queue: float, accepted: float, seed: int) -> None:
    """Running and waiting each wobbling +-2.5 % around a steady level (the cap's target moves
    less than a quarter of the hysteresis band): after the first decision, at most one change."""
    noise = random.Random(seed)
    state, changes = CapState(), 0
    for tick in range(400):
        obs = observe(
            tick * 5.0,
            running * (1 + noise.uniform(-0.025, 0.025)),
            running * queue * (1 + noise.uniform(-0.025, 0.025)),
            accepted,
        )
        decision, state = decide_cap(POLICY, obs, state)
        if tick > 0 and decision.changed:
            changes += 1
    assert changes <= 1
    assert state.soft_cap is not None and not math.isnan(state.soft_cap)
