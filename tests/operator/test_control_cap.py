"""control.cap: the speculation-cap policy, by worked example (exact caps and reasons: break-even
size, goodput hard cap, zero acceptance and the probe, hysteresis, dwell, step limits, bounds,
unknown acceptance, dead metrics) and by property (bounds, no flapping, the queue never raises it)."""

from __future__ import annotations

import dataclasses
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
)
from arctic_operator.control.cost import DEFAULT_COSTS
from tests.operator.hypo import examples

POLICY = CapPolicy(min_cap=1, max_cap=64, cost_model=VerifyCostModel())
"""The H100 8B k=3 curve (1.26, 1.33, 1.38, 1.67 at batch 1, 4, 16, 64), margin 0.1, hard = soft + 1,
20 % hysteresis, 30 s dwell, x2 step limit, probe after 600 s."""


def observe(
    time: float,
    running: float = 8.0,
    waiting: float = 0.0,
    accepted_per_draft: float | None = 0.6,
    *,
    complete: bool = True,
    effective: tuple[int | None, int | None] = (None, None),
    draft_len: float | None = None,
) -> CapObservation:
    return CapObservation(
        time=time,
        running=running,
        waiting=waiting,
        accepted_per_draft=accepted_per_draft,
        effective_soft_cap=effective[0],
        effective_hard_cap=effective[1],
        complete=complete,
        draft_len=draft_len,
    )


def settled(soft: int, policy: CapPolicy = POLICY, at: float = -1000.0, accepted: float = 0.6) -> CapState:
    """A state as the policy leaves it: ``soft`` set long ago."""
    return CapState(soft, policy.hard_for(soft), at, accepted, last_measured=at)


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
    with pytest.raises(ValueError, match="increasing"):
        VerifyCostModel(batch_sizes=(0, 1), cost_ratios=(1.2, 1.3))


@pytest.mark.parametrize(
    ("max_cap", "accepted", "expected"),
    [
        (64, 0.6, 22),  # 1.6 / cost(b) >= 1.1 up to cost 1.4545: b = 16 x 4^0.257 = 22.8
        (64, 0.45, 3),
        (64, 0.5, 10),
        (64, 0.3, 0),  # does not pay even alone
        (64, 0.0, 0),
        (64, 2.0, 64),
        (200, 2.0, 200),  # the cost is flat beyond 64: pays at any size
        (200, 0.6, 22),
        (10, 0.6, 10),
        (0, 2.0, 0),
    ],
)
def test_break_even_batch(max_cap: int, accepted: float, expected: int) -> None:
    policy = CapPolicy(min_cap=0, max_cap=max_cap, cost_model=VerifyCostModel())
    assert break_even_batch(policy, accepted) == expected


def test_the_margin_is_required() -> None:
    exact = CapPolicy(min_cap=0, max_cap=64, margin=0.0, cost_model=VerifyCostModel())
    assert break_even_batch(exact, 0.26) == 1  # 1.26 / 1.26 = 1: pays without a margin
    assert break_even_batch(POLICY, 0.26) == 0  # not with 10 %
    assert break_even_batch(POLICY, 0.386) == 1  # 1.386 / 1.26 = 1.1


def test_the_curve_follows_the_pods_draft_length() -> None:
    policy = CapPolicy(min_cap=1, max_cap=64)  # the built-in curves for k = 1, 3, 5
    assert policy.model_for(2.0).cost_ratios == pytest.approx((1.251, 1.3425, 1.3835, 1.5925))
    assert policy.model_for(None) == DEFAULT_COSTS.model_for(3)
    assert policy.model_for(0.5) == DEFAULT_COSTS.model_for(1)
    assert policy.model_for(9) == DEFAULT_COSTS.model_for(5)
    # the same acceptance pays up to different sizes for short and long drafts
    short, _ = decide_cap(policy, observe(0, accepted_per_draft=0.6, draft_len=1.0), CapState())
    long, _ = decide_cap(policy, observe(0, accepted_per_draft=0.6, draft_len=5.0), CapState())
    # k=1: 1.386 + 0.531 x (1.515 - 1.386) = 1.4545 at 16 x 4^0.531 = 33.4; k=5: 1.6 / 1.458 < 1.1
    assert (short.soft_cap, short.hard_cap, long.soft_cap, long.hard_cap) == (33, 34, 1, 1)
    assert short.inputs["draftLenUsed"] == 1.0


def test_hard_for() -> None:
    assert [POLICY.hard_for(s) for s in (0, 1, 22, 64)] == [0, 2, 23, 65]
    assert [POLICY.hard_for(s, paying=False) for s in (0, 1, 22)] == [0, 1, 22]
    doubled = CapPolicy(min_cap=1, max_cap=64, hard_factor=2.0)
    assert [doubled.hard_for(s) for s in (0, 1, 3, 22)] == [0, 2, 6, 44]
    limited = CapPolicy(min_cap=1, max_cap=64, hard_cap_limit=30)
    assert [limited.hard_for(s) for s in (22, 29, 30)] == [23, 30, 30]
    assert limited.bounds() == (1, 30)
    assert CapPolicy(min_cap=8, max_cap=64, hard_cap_limit=4).bounds() == (4, 4)


# --- decisions --------------------------------------------------------------------------------


def test_the_first_decision_applies_at_once() -> None:
    decision, state = decide_cap(POLICY, observe(0, effective=(None, None)), CapState())
    assert (decision.soft_cap, decision.hard_cap, decision.reason) == (22, 23, "Initial")
    assert (decision.previous_soft_cap, decision.previous_hard_cap) == (None, None)
    assert decision.changed
    assert (
        decision.message == "Soft cap None -> 22: drafting pays up to 22 running at 0.60 accepted per draft."
    )
    assert decision.inputs["breakEvenBatch"] == 22
    assert decision.inputs["costAtRunning"] == 1.355  # at the 8 running observed
    assert state == CapState(22, 23, 0, 0.6, last_measured=0)


def test_an_engine_already_at_the_target_is_not_pushed_again() -> None:
    decision, _ = decide_cap(POLICY, observe(0, effective=(22, 23)), CapState())
    assert (decision.soft_cap, decision.hard_cap, decision.changed) == (22, 23, False)


def test_without_any_acceptance_the_first_cap_is_optimistic_then_held() -> None:
    decision, state = decide_cap(POLICY, observe(0, accepted_per_draft=None), CapState())
    assert (decision.soft_cap, decision.hard_cap, decision.reason) == (64, 65, "Optimistic")
    decision, state = decide_cap(POLICY, observe(100, accepted_per_draft=None), state)
    assert (decision.soft_cap, decision.reason, decision.changed) == (64, "AcceptanceUnknown", False)


def test_the_last_measured_acceptance_is_used_while_nothing_drafts() -> None:
    state = CapState(64, 65, -1000, last_accepted_per_draft=0.45, last_measured=-100)
    decision, state = decide_cap(POLICY, observe(0, accepted_per_draft=None), state)
    # 64 -> 3 wanted; the step limit halves it
    assert (decision.soft_cap, decision.hard_cap, decision.reason) == (32, 33, "Lowered")
    assert decision.inputs["acceptedPerDraftUsed"] == 0.45
    assert state.last_accepted_per_draft == 0.45 and state.last_measured == -100


def test_a_queue_does_not_move_a_cap_where_drafting_pays() -> None:
    """The hard cap (soft + 1) already stops drafting at every size where it costs more than it
    gains; shrinking the cap for a queue would only stop drafting where it still pays."""
    decision, _ = decide_cap(POLICY, observe(0, running=20, waiting=200), settled(22))
    assert (decision.soft_cap, decision.hard_cap, decision.reason) == (22, 23, "WithinHysteresis")


def test_poor_acceptance_lowers_the_cap_and_good_acceptance_raises_it() -> None:
    decision, _ = decide_cap(POLICY, observe(0, accepted_per_draft=0.45), settled(4))
    assert (decision.soft_cap, decision.hard_cap, decision.reason) == (3, 4, "Lowered")
    decision, _ = decide_cap(POLICY, observe(0, accepted_per_draft=0.6), settled(4))
    assert (decision.soft_cap, decision.hard_cap, decision.reason) == (8, 9, "Raised")  # 22 wanted, x2
    assert decision.message.startswith("Soft cap 4 -> 8 (step limit; target 22): ")
    decision, _ = decide_cap(POLICY, observe(0, accepted_per_draft=0.6), settled(16))
    assert (decision.soft_cap, decision.reason) == (22, "Raised")  # 32 allowed, 22 wanted: no overshoot
    decision, _ = decide_cap(POLICY, observe(0, accepted_per_draft=0.6), settled(40))
    assert (decision.soft_cap, decision.reason) == (22, "Lowered")  # 20 allowed, 22 wanted


def test_zero_acceptance_stops_drafting_at_once() -> None:
    decision, state = decide_cap(POLICY, observe(0, accepted_per_draft=0.0), settled(64, at=-5))
    assert (decision.soft_cap, decision.hard_cap, decision.reason) == (1, 1, "NotPaying")
    assert decision.message == (
        "Soft cap 64 -> 1, nobody drafts: "
        "drafting does not pay even for one request at 0.00 accepted per draft."
    )
    decision, state = decide_cap(POLICY, observe(5, accepted_per_draft=0.1), state)
    assert (decision.soft_cap, decision.hard_cap, decision.reason, decision.changed) == (
        1,
        1,
        "WithinHysteresis",
        False,
    )
    off = CapPolicy(min_cap=0, max_cap=64, cost_model=VerifyCostModel())
    decision, _ = decide_cap(off, observe(0, accepted_per_draft=0.2), settled(8, off))
    assert (decision.soft_cap, decision.hard_cap) == (0, 0)


def test_too_few_drafts_do_not_count_as_measured_acceptance() -> None:
    """A pod's first window with 3 drafts, none accepted: too little to stop drafting for the 600 s
    until a probe; from ``min_drafts`` (8) drafts on it counts."""
    few = dataclasses.replace(observe(0, accepted_per_draft=0.0), drafts=3)
    decision, state = decide_cap(POLICY, few, CapState())
    assert (decision.soft_cap, decision.hard_cap, decision.reason) == (64, 65, "Optimistic")
    assert state.last_accepted_per_draft is None and state.last_measured is None
    enough = dataclasses.replace(observe(40, accepted_per_draft=0.0), drafts=8)
    decision, state = decide_cap(POLICY, enough, state)
    assert (decision.soft_cap, decision.hard_cap, decision.reason) == (1, 1, "NotPaying")
    assert state.last_accepted_per_draft == 0.0 and state.last_measured == 40
    # later, a window with too few drafts leaves the measured acceptance (and its age) as it was
    decision, state = decide_cap(
        POLICY, dataclasses.replace(observe(80, accepted_per_draft=2.0), drafts=7), state
    )
    assert (decision.soft_cap, decision.reason) == (1, "WithinHysteresis")
    assert state.last_accepted_per_draft == 0.0 and state.last_measured == 40


def test_a_stale_zero_acceptance_is_probed_again() -> None:
    state = CapState(1, 1, 0, last_accepted_per_draft=0.1, last_measured=0)
    decision, state = decide_cap(POLICY, observe(600, accepted_per_draft=None), state)
    assert (decision.soft_cap, decision.reason) == (1, "WithinHysteresis")  # not older than 600 s yet
    decision, state = decide_cap(POLICY, observe(601, accepted_per_draft=None), state)
    assert (decision.soft_cap, decision.hard_cap, decision.reason) == (1, 2, "Probe")
    assert decision.message == (
        "Soft cap 1, hard cap 2: the acceptance that stopped drafting was measured 601s ago; "
        "a lone request drafts to measure it again."
    )
    assert state.last_measured == 601
    decision, state = decide_cap(POLICY, observe(606, accepted_per_draft=None), state)
    assert (decision.soft_cap, decision.hard_cap, decision.reason) == (1, 1, "NotPaying")  # still 0.1
    state = CapState(1, 2, 0, last_accepted_per_draft=0.1, last_measured=0)
    decision, state = decide_cap(POLICY, observe(2000, accepted_per_draft=0.9), state)
    assert (decision.soft_cap, decision.hard_cap, decision.reason) == (2, 3, "Raised")


def test_a_cap_of_zero_rises_again() -> None:
    policy = CapPolicy(min_cap=0, max_cap=64, cost_model=VerifyCostModel())
    state = CapState(0, 0, -1000, 0.0, last_measured=-1000)
    changes = []
    for time in range(0, 200, 5):
        decision, state = decide_cap(policy, observe(time, accepted_per_draft=0.6), state)
        if decision.changed:
            changes.append((time, decision.soft_cap, decision.hard_cap))
    assert changes == [(0, 1, 2), (30, 2, 3), (60, 4, 5), (90, 8, 9), (120, 16, 17), (150, 22, 23)]


def test_each_lowering_moves_at_least_one() -> None:
    slow = CapPolicy(min_cap=1, max_cap=64, max_step_factor=1.0, cost_model=VerifyCostModel())
    decision, _ = decide_cap(slow, observe(0, accepted_per_draft=0.45), settled(5, slow))
    assert (decision.soft_cap, decision.reason) == (4, "Lowered")  # 3 wanted, x1 allows none: 1
    decision, _ = decide_cap(slow, observe(0, accepted_per_draft=0.6), settled(5, slow))
    assert (decision.soft_cap, decision.reason) == (6, "Raised")


def test_the_cost_at_running_is_read_at_one_request_at_least() -> None:
    decision, _ = decide_cap(POLICY, observe(0, running=0.5), CapState())
    assert decision.inputs["costAtRunning"] == 1.26
    decision, _ = decide_cap(POLICY, observe(0, running=2.0), CapState())
    assert decision.inputs["costAtRunning"] == 1.295


def test_a_probe_needs_a_cap_above_zero() -> None:
    stale = CapState(1, 1, 0, last_accepted_per_draft=0.1, last_measured=0)
    one = CapPolicy(min_cap=1, max_cap=1, cost_model=VerifyCostModel())
    decision, _ = decide_cap(one, observe(700, accepted_per_draft=None), stale)
    assert (decision.soft_cap, decision.hard_cap, decision.reason) == (1, 2, "Probe")
    zero = CapPolicy(min_cap=0, max_cap=0, cost_model=VerifyCostModel())
    decision, _ = decide_cap(zero, observe(700, accepted_per_draft=None), CapState(0, 0, 0, 0.1, 0))
    assert (decision.soft_cap, decision.hard_cap, decision.changed) == (0, 0, False)


def test_paying_again_at_the_same_size_lifts_the_hard_cap() -> None:
    state = CapState(22, 22, -1000, 0.0, last_measured=-1000)
    decision, _ = decide_cap(POLICY, observe(0, accepted_per_draft=0.6), state)
    assert (decision.soft_cap, decision.hard_cap, decision.reason) == (22, 23, "Raised")


def test_small_changes_are_ignored() -> None:
    decision, state = decide_cap(POLICY, observe(0, accepted_per_draft=0.58), settled(22))
    assert decision.inputs["breakEvenBatch"] == 20  # within 20 % of 22 (4.4)
    assert (decision.soft_cap, decision.reason, decision.changed) == (22, "WithinHysteresis", False)
    assert state == dataclasses.replace(settled(22, accepted=0.58), last_measured=0)
    decision, _ = decide_cap(POLICY, observe(0, accepted_per_draft=0.55), settled(22))
    assert (decision.inputs["breakEvenBatch"], decision.reason) == (18, "WithinHysteresis")  # 4 < 4.4
    decision, _ = decide_cap(POLICY, observe(0, accepted_per_draft=0.5), settled(22))
    assert (decision.soft_cap, decision.reason) == (11, "Lowered")  # 10 wanted, halved at most


def test_hysteresis_is_a_distance() -> None:
    decision, _ = decide_cap(POLICY, observe(0, accepted_per_draft=0.517), settled(16))
    assert (decision.inputs["breakEvenBatch"], decision.reason) == (15, "WithinHysteresis")  # 1 < 3.2


def test_no_change_within_the_dwell_time() -> None:
    decision, state = decide_cap(POLICY, observe(0, accepted_per_draft=0.45), settled(22, at=-10))
    assert (decision.soft_cap, decision.reason) == (22, "Dwell")
    assert decision.message.endswith("but it changed 10s ago (dwell 30s).")
    decision, _ = decide_cap(POLICY, observe(19, accepted_per_draft=0.45), state)
    assert decision.reason == "Dwell"
    decision, _ = decide_cap(POLICY, observe(20, accepted_per_draft=0.45), state)
    assert (decision.soft_cap, decision.hard_cap, decision.reason) == (11, 12, "Lowered")  # 3 wanted


def test_incomplete_metrics_change_nothing() -> None:
    state = settled(22)
    decision, after = decide_cap(
        POLICY, observe(0, running=100, waiting=500, accepted_per_draft=0.1, complete=False), state
    )
    assert (decision.soft_cap, decision.hard_cap, decision.reason) == (22, 23, "MetricsIncomplete")
    assert not decision.changed and after == state
    first, after = decide_cap(POLICY, observe(0, complete=False, effective=(None, None)), CapState())
    assert (first.soft_cap, first.changed, after) == (None, False, CapState())


def test_caps_outside_the_bounds_move_in_at_once() -> None:
    policy = CapPolicy(min_cap=1, max_cap=16, cost_model=VerifyCostModel())
    decision, _ = decide_cap(policy, observe(0), settled(64, at=-1))  # in dwell, far above
    assert (decision.soft_cap, decision.hard_cap, decision.reason) == (16, 17, "OutOfBounds")
    decision, _ = decide_cap(policy, observe(0, accepted_per_draft=2.0), CapState())
    assert (decision.soft_cap, decision.hard_cap) == (16, 17)  # pays at any size: the max holds
    raised = CapPolicy(min_cap=4, max_cap=16, cost_model=VerifyCostModel())
    decision, _ = decide_cap(raised, observe(0), settled(2, at=-1))
    assert (decision.soft_cap, decision.reason) == (16, "OutOfBounds")  # straight to the target
    decision, _ = decide_cap(raised, observe(0, accepted_per_draft=None), CapState(2, 3, -1))
    assert (decision.soft_cap, decision.reason) == (4, "OutOfBounds")  # no acceptance: into bounds
    mismatched = CapState(16, 40, -1, 0.6, last_measured=-1)  # hard cap no longer what it should be
    decision, _ = decide_cap(policy, observe(0), mismatched)
    assert (decision.soft_cap, decision.hard_cap, decision.reason) == (16, 17, "OutOfBounds")


def test_the_hard_cap_limit_bounds_both_caps() -> None:
    policy = CapPolicy(min_cap=1, max_cap=64, hard_cap_limit=22, cost_model=VerifyCostModel())
    decision, _ = decide_cap(policy, observe(0), CapState())
    assert (decision.soft_cap, decision.hard_cap) == (22, 22)
    tight = CapPolicy(min_cap=8, max_cap=64, hard_cap_limit=4, cost_model=VerifyCostModel())
    decision, _ = decide_cap(tight, observe(0), CapState())
    assert (decision.soft_cap, decision.hard_cap) == (4, 4)


def test_observations_states_and_decisions_are_immutable() -> None:
    decision, state = decide_cap(POLICY, observe(0), CapState())
    for value in (observe(0), state, decision, POLICY):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, "time", 1.0)  # noqa: B010


def test_from_spec() -> None:
    spec = SpeculationSpec.model_validate(
        {"method": "ngram", "hardCap": 48, "capController": {"enabled": True, "min": 2, "max": 32}}
    )
    policy = CapPolicy.from_spec(spec)
    assert (policy.min_cap, policy.max_cap, policy.hard_cap_limit) == (2, 32, 48)
    assert policy.costs == DEFAULT_COSTS and policy.cost_model is None
    assert CapPolicy.from_spec(SpeculationSpec()).hard_cap_limit is None
    assert CapPolicy.from_spec(SpeculationSpec()).ttft_budget == 0.01
    loose = SpeculationSpec.model_validate({"capController": {"ttftBudgetPercent": 25}})
    assert CapPolicy.from_spec(loose).ttft_budget == 0.25
    # the engine's draftsInPrefillSteps is what the TTFT budget prices
    assert CapPolicy.from_spec(SpeculationSpec()).drafts_with_prefill is True
    dropping = SpeculationSpec.model_validate({"draftsInPrefillSteps": False})
    assert CapPolicy.from_spec(dropping).drafts_with_prefill is False


# --- properties -------------------------------------------------------------------------------


@st.composite
def policies(draw: st.DrawFn) -> CapPolicy:
    low = draw(st.integers(0, 8))
    return CapPolicy(
        min_cap=low,
        max_cap=draw(st.integers(low, 128)),
        hard_cap_limit=draw(st.none() | st.integers(0, 200)),
        hard_factor=draw(st.sampled_from([None, 1.0, 1.5, 2.0, 3.0])),
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
        draft_len=draw(st.none() | st.floats(0, 20)),
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


@settings(max_examples=examples(200), deadline=None)
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


@settings(max_examples=examples(200), deadline=None)
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


@settings(max_examples=examples(200), deadline=None)
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


@settings(max_examples=examples(60), deadline=None)
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
