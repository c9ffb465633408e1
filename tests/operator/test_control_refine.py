"""control.refine: the cost file refined from the pods' decode steps (exact results on worked
examples), their parsing from /metrics, and the control loop and status that use them."""

from __future__ import annotations

import dataclasses
import math

import pytest

from arctic_operator.control.cap import CapPolicy, break_even_batch
from arctic_operator.control.controller import refinement_status
from arctic_operator.control.cost import VerifyCosts
from arctic_operator.control.loop import ControlLoop
from arctic_operator.control.metrics import PodSample, StepTotals, parse_metrics
from arctic_operator.control.refine import MIN_VERIFY_COST, StepTimes, refine_costs
from arctic_operator.control.replicas import ReplicaPolicy

COSTS = VerifyCosts(
    batch_sizes=(1, 4, 16, 64),
    by_draft_len=((1, (1.1, 1.15, 1.2, 1.3)), (3, (1.2, 1.3, 1.4, 1.6))),
    decode_step_s=(0.010, 0.010, 0.012, 0.016),
    prefill_s_per_token=1e-5,
    source="test file",
)


def flat(points: tuple[tuple[float, float], ...]) -> list[float]:
    return [value for point in points for value in point]


def plain(steps: float, batch: float, step_s: float) -> StepTotals:
    return StepTotals(steps=steps, seconds=steps * step_s, requests=steps * batch)


def drafting(steps: float, batch: float, share: float, draft_len: float, step_s: float) -> StepTotals:
    drafted = steps * batch * share
    return StepTotals(
        steps=steps,
        seconds=steps * step_s,
        requests=steps * batch,
        drafting=drafted,
        draft_tokens=drafted * draft_len,
    )


def test_nothing_measured_leaves_the_file_as_it_is() -> None:
    result = refine_costs(COSTS, {})
    assert result.costs is COSTS
    assert not result.refined
    assert result.change_at(4) is None
    # too few steps of either kind in a bucket: not counted
    few = refine_costs(COSTS, {(4, False): plain(199, 4, 0.01), (4, True): drafting(500, 4, 1, 3, 0.05)})
    assert few.costs is COSTS and not few.refined
    few = refine_costs(COSTS, {(4, False): plain(500, 4, 0.01), (4, True): drafting(199, 4, 1, 3, 0.05)})
    assert few.costs is COSTS and not few.refined
    # steps with drafts but none without in their bucket (a small batch under a cap): as the file
    alone = refine_costs(COSTS, {(4, True): drafting(500, 4, 1, 3, 0.05), (16, False): plain(500, 16, 0.01)})
    assert alone.costs is COSTS and not alone.refined


def test_one_bucket_moves_every_curve_by_the_measured_difference() -> None:
    # at 4 running: plain steps 15 ms; half of the requests draft 3 tokens in steps of 19.5 ms,
    # 1.3 plain steps, so the verify cost is 1 + (1.3 - 1) / 0.5 = 1.6, the file's 1.3 + 0.3
    totals = {(4, False): plain(400, 4, 0.015), (4, True): drafting(300, 4, 0.5, 3, 0.0195)}
    result = refine_costs(COSTS, totals)
    assert result.refined and result.steps == 700
    assert flat(result.points) == pytest.approx([4.0, 0.3])
    refined = dict(result.costs.by_draft_len)
    assert refined[3] == pytest.approx((1.5, 1.6, 1.7, 1.9))
    assert refined[1] == pytest.approx((1.4, 1.45, 1.5, 1.6))
    # the rest of the file as shipped
    assert result.costs.decode_step_s == COSTS.decode_step_s
    assert result.costs.prefill_s_per_token == COSTS.prefill_s_per_token
    assert result.costs.batch_sizes == COSTS.batch_sizes
    assert "verify costs refined from 700 of the pods' decode steps" in result.costs.source


def test_the_plain_steps_move_to_the_drafting_steps_batch_along_the_file() -> None:
    # bucket 16: plain steps of 16 running take 24 ms (the file: 12 ms); the steps with drafts
    # hold 10 running on average, every request drafting 3 tokens. The file's decode step at 10
    # running over its step at 16 moves the 24 ms plain step to 10 running.
    at_10, at_16 = COSTS.decode_step(10), COSTS.decode_step(16)
    assert at_10 is not None and at_16 is not None
    base = 0.024 * at_10 / at_16
    totals = {(16, False): plain(300, 16, 0.024), (16, True): drafting(300, 10, 1.0, 3, base * 1.5)}
    result = refine_costs(COSTS, totals)
    file_cost = COSTS.model_for(3).cost(10)
    assert flat(result.points) == pytest.approx([10.0, 1.5 - file_cost])
    # without the file's decode steps the plain steps are taken as they are
    bare = VerifyCosts(batch_sizes=(1, 4, 16, 64), by_draft_len=((3, (1.2, 1.3, 1.4, 1.6)),))
    result = refine_costs(
        bare, {(16, False): plain(300, 16, 0.020), (16, True): drafting(300, 10, 1.0, 3, 0.03)}
    )
    assert flat(result.points) == pytest.approx([10.0, 1.5 - bare.model_for(3).cost(10)])


def test_changes_are_interpolated_in_log_batch_and_bounded() -> None:
    totals = {
        # 1 running: the request drafts in steps 2.6 plain steps long: 1.4 over the file, bounded to 1
        (1, False): plain(500, 1, 0.010),
        (1, True): drafting(500, 1, 1.0, 3, 0.026),
        # 16 running: steps with drafts as long as plain ones: 1.0, 0.4 under the file's 1.4
        (16, False): plain(500, 16, 0.012),
        (16, True): drafting(500, 16, 1.0, 3, 0.012),
    }
    result = refine_costs(COSTS, totals)
    assert flat(result.points) == pytest.approx([1.0, 1.0, 16.0, -0.4])
    # at 4 running, halfway in log(batch): 0.3; flat outside the measured batches
    assert result.change_at(4) == pytest.approx(0.3)
    assert result.change_at(64) == pytest.approx(-0.4)
    assert dict(result.costs.by_draft_len)[3] == pytest.approx((2.2, 1.6, 1.0, 1.2))
    # never below MIN_VERIFY_COST: steps with drafts much shorter than plain ones
    faster = {(4, False): plain(400, 4, 0.010), (4, True): drafting(300, 4, 1.0, 3, 0.005)}
    result = refine_costs(COSTS, faster)
    assert flat(result.points) == pytest.approx([4.0, -0.8])  # 0.5 against 1.3
    assert dict(result.costs.by_draft_len)[1] == pytest.approx((MIN_VERIFY_COST, 0.5, 0.5, 0.5))
    assert dict(result.costs.by_draft_len)[3] == pytest.approx((MIN_VERIFY_COST, 0.5, 0.6, 0.8))


def test_a_costlier_verify_lowers_the_break_even_batch() -> None:
    policy = CapPolicy(min_cap=1, max_cap=64, costs=COSTS, ttft_budget=None)
    shipped = break_even_batch(policy, 0.5, COSTS.model_for(3))
    totals = {(4, False): plain(400, 4, 0.010), (4, True): drafting(300, 4, 1.0, 3, 0.010 * 1.6)}
    refined = refine_costs(COSTS, totals).costs
    assert dict(refined.by_draft_len)[3] == pytest.approx((1.5, 1.6, 1.7, 1.9))
    # 1.5 tokens per step pays while the cost is at most 1.5 / 1.1 = 1.364: the file's curve
    # reaches it between 4 (1.3) and 16 (1.4) running, at 4 x 4^0.636 = 9.7; the refined one
    # is above it already for one request (1.5): drafting does not pay
    assert shipped == 9
    assert break_even_batch(policy, 0.5, refined.model_for(3)) == 0


def test_step_totals_grow_reset_and_decay() -> None:
    assert StepTotals(10, 1.0, 40, 4, 12).increase_since(StepTotals(4, 0.5, 16, 1, 3)) == StepTotals(
        6, 0.5, 24, 3, 9
    )
    # a counter that went down: the engine restarted, it counts from zero
    assert StepTotals(3, 0.2, 12, 0, 0).increase_since(StepTotals(10, 1.0, 40, 4, 12)) == StepTotals(
        3, 0.2, 12, 0, 0
    )
    times = StepTimes(half_life_s=600.0)
    key = (4, False)
    times.add("a", 0.0, {key: plain(1000, 4, 0.01)})  # the baseline only
    assert times.totals() == {}
    times.add("a", 10.0, {key: plain(1100, 4, 0.01)})
    assert times.totals()[key].steps == pytest.approx(100)
    times.add("b", 20.0, {key: plain(50, 4, 0.01)})  # another pod's baseline
    times.add("a", 610.0, {key: plain(1200, 4, 0.01)})  # 600 s later: the first 100 count half
    assert times.totals()[key].steps == pytest.approx(100 * 0.5 + 100)
    times.add("b", 620.0, {key: plain(80, 4, 0.01)})
    assert times.totals()[key].steps == pytest.approx((150) * 0.5 ** (10 / 600) + 30)
    times.add("a", 300.0, {key: plain(5000, 4, 0.01)})  # older than the last scrape: ignored
    assert times.totals()[key].steps == pytest.approx(150 * 0.5 ** (10 / 600) + 30)
    times.forget(["b"])
    times.add("a", 700.0, {key: plain(1300, 4, 0.01)})  # forgotten: a new baseline
    assert times.totals()[key].steps == pytest.approx((150 * 0.5 ** (10 / 600) + 30) * 0.5 ** (80 / 600))


METRICS = """\
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="m"} 4
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="m"} 0
# HELP arctic_decode_steps_total Decode-only steps
# TYPE arctic_decode_steps_total counter
arctic_decode_steps_total{batch="4",drafting="on"} 300
arctic_decode_steps_total{batch="4",drafting="off"} 400
arctic_decode_steps_total{batch="x",drafting="off"} 9
arctic_decode_steps_total{batch="8",drafting="maybe"} 9
# TYPE arctic_decode_step_seconds counter
arctic_decode_step_seconds_total{batch="4",drafting="on"} 5.85
arctic_decode_step_seconds_total{batch="4",drafting="off"} 6.0
# TYPE arctic_decode_step_requests counter
arctic_decode_step_requests_total{batch="4",drafting="on"} 1200
arctic_decode_step_requests_total{batch="4",drafting="off"} 1600
# TYPE arctic_decode_step_drafting_requests counter
arctic_decode_step_drafting_requests_total{batch="4",drafting="on"} 600
arctic_decode_step_drafting_requests_total{batch="4",drafting="off"} 0
# TYPE arctic_decode_step_draft_tokens counter
arctic_decode_step_draft_tokens_total{batch="4",drafting="on"} 1800
arctic_decode_step_draft_tokens_total{batch="4",drafting="off"} NaN
"""


def test_decode_steps_are_parsed_by_bucket_and_drafting() -> None:
    sample = parse_metrics(METRICS, 1.0)
    assert sample.decode_steps == {
        (4, True): StepTotals(steps=300, seconds=5.85, requests=1200, drafting=600, draft_tokens=1800),
        (4, False): StepTotals(steps=400, seconds=6.0, requests=1600, drafting=0, draft_tokens=0),
    }
    assert sample.complete
    without = parse_metrics(METRICS.split("# TYPE arctic_decode_steps")[0], 1.0)
    assert without.decode_steps is None


def pod_sample(time: float, totals: dict[tuple[int, bool], StepTotals]) -> PodSample:
    return PodSample(
        time=time,
        running=4.0,
        waiting=0.0,
        kv_cache_usage=0.2,
        drafts=0.0,
        draft_tokens=0.0,
        accepted_tokens=0.0,
        soft_cap=None,
        hard_cap=None,
        cap_reported=True,
        decode_steps=totals,
    )


def test_the_loop_refines_the_costs_for_both_policies_when_asked() -> None:
    before = {(4, False): StepTotals(), (4, True): StepTotals()}
    after = {(4, False): plain(400, 4, 0.015), (4, True): drafting(300, 4, 0.5, 3, 0.0195)}
    policy = CapPolicy(min_cap=1, max_cap=64, costs=COSTS)
    replicas = ReplicaPolicy(min_replicas=1, max_replicas=4, running_per_replica=32.0, costs=COSTS)
    loop = ControlLoop(replicas, policy)
    loop.observe("p", pod_sample(0.0, before))
    loop.observe("p", pod_sample(5.0, after))
    decided = loop.decide(5.0, 1, ["p"], 0)
    assert decided.refinement is not None and decided.refinement.refined
    assert dict(decided.refinement.costs.by_draft_len)[3] == pytest.approx((1.5, 1.6, 1.7, 1.9))
    assert loop.cap_policy is policy  # the policy as set stays; the refined costs are per decision
    off = ControlLoop(replicas, CapPolicy(min_cap=1, max_cap=64, costs=COSTS, refine_costs=False))
    off.observe("p", pod_sample(0.0, before))
    off.observe("p", pod_sample(5.0, after))
    assert off.decide(5.0, 1, ["p"], 0).refinement is None
    status = refinement_status(decided.refinement)
    assert status is not None and status.steps == 700
    assert [(p.batch, p.change) for p in status.verify_cost or []] == [(4.0, 0.3)]
    assert refinement_status(off.decide(6.0, 1, ["p"], 0).refinement) is None
    assert math.isclose(decided.refinement.steps, 700)


def test_the_spec_field_turns_the_refinement_off() -> None:
    from arctic_operator.api import SpeculationSpec

    assert CapPolicy.from_spec(SpeculationSpec()).refine_costs is True
    spec = SpeculationSpec.model_validate({"capController": {"enabled": True, "refineCosts": False}})
    assert CapPolicy.from_spec(spec).refine_costs is False


def test_boundaries_a_bucket_of_exactly_min_steps_and_a_fractional_mean_batch() -> None:
    # 200 steps of each kind count (the default min_steps); the mean batch 3.5 is not rounded
    totals = {(4, False): plain(200, 3.5, 0.010), (4, True): drafting(200, 3.5, 1.0, 3, 0.016)}
    result = refine_costs(COSTS, totals)
    assert result.refined and result.steps == 400
    assert flat(result.points) == pytest.approx([3.5, 1.6 - COSTS.model_for(3).cost(3.5)])


def test_a_scrape_behind_the_newest_time_does_not_grow_the_totals() -> None:
    times = StepTimes(half_life_s=600.0)
    key = (4, False)
    times.add("a", 0.0, {key: plain(0, 4, 0.01)})
    times.add("a", 600.0, {key: plain(100, 4, 0.01)})
    times.add("b", 300.0, {key: plain(0, 4, 0.01)})  # another pod's first scrape, older than a's
    assert times.totals()[key].steps == pytest.approx(100)  # no decay backwards
    times.add("b", 500.0, {key: plain(10, 4, 0.01)})
    assert times.totals()[key].steps == pytest.approx(110)


def test_a_wrong_cost_file_is_corrected_by_the_pods_steps_and_drafting_stops() -> None:
    """The file says a 3-token verify costs 1.2 plain steps at any batch; the engine's steps say 1.8.
    At 0.8 accepted tokens per draft drafting pays by the file (1.8 / 1.2 = 1.5 tokens per step-time)
    but not by the engine (1.8 / 1.8 = 1.0, under the 1.1 the policy asks): with the refinement the
    loop stops drafting, without it drafting goes on at the highest cap."""
    wrong = VerifyCosts(batch_sizes=(1, 64), by_draft_len=((3, (1.2, 1.2)),))

    def scrape(time: float, scale: float) -> PodSample:
        drafts = 600 * scale  # 4 running, every step drafting 3 tokens each, 0.8 accepted per draft
        steps = {
            (4, False): plain(300 * scale, 4, 0.010),
            (4, True): drafting(150 * scale, 4, 1.0, 3, 0.018),
        }
        return dataclasses.replace(
            pod_sample(time, steps),
            drafts=drafts,
            draft_tokens=3 * drafts,
            accepted_tokens=0.8 * drafts,
        )

    decided = {}
    for refine in (True, False):
        policy = CapPolicy(min_cap=1, max_cap=64, costs=wrong, ttft_budget=None, refine_costs=refine)
        loop = ControlLoop(None, policy)
        for tick, time in enumerate((0.0, 5.0, 10.0)):
            loop.observe("p", scrape(time, tick))
        decided[refine] = loop.decide(10.0, 1, ["p"], 0).caps["p"]
    assert (decided[False].soft_cap, decided[False].hard_cap, decided[False].reason) == (64, 65, "Initial")
    # refined: 1.2 + (1.8 - 1.2) = 1.8 at every batch: drafting does not pay even for one request
    assert (decided[True].soft_cap, decided[True].hard_cap, decided[True].reason) == (1, 1, "Initial")
    assert decided[True].inputs["breakEvenBatch"] == 0
    assert decided[True].inputs["costAtRunning"] == pytest.approx(1.8)
