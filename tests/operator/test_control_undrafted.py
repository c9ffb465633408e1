"""The running target counted as without drafting (spec.autoscaling.runningRequestsAsUndrafted): worked
examples with exact numbers, from the scraped counters to the replica decision."""

from __future__ import annotations

import dataclasses

import pytest

from arctic_operator.api import AutoscalingSpec
from arctic_operator.control.cost import VerifyCosts
from arctic_operator.control.loop import ControlLoop, replica_observation, undrafted_running
from arctic_operator.control.metrics import MetricsWindow, PodSample, PodWindow, parse_metrics
from arctic_operator.control.replicas import (
    ReplicaObservation,
    ReplicaPolicy,
    ReplicaState,
    decide_replicas,
    load_in_replicas,
)

COSTS = VerifyCosts(batch_sizes=(1, 64), by_draft_len=((2, (1.1, 1.1)), (4, (1.2, 1.2))))
"""A 4-token verify costs 1.2 plain steps at every batch, a 2-token one 1.1."""
POLICY = ReplicaPolicy(
    min_replicas=1,
    max_replicas=8,
    running_per_replica=32.0,
    scale_up_window_s=0.0,
    running_as_undrafted=True,
    costs=COSTS,
)


def window(**changes: object) -> PodWindow:
    """30 running; half of 400 request-steps drafted 4 tokens (acceptance 0.5: 2 accepted per draft)."""
    base: dict[str, object] = dict(
        pod="p",
        samples=7,
        running=30.0,
        waiting=0.0,
        waiting_last=0.0,
        kv_cache_usage=0.3,
        accepted_per_draft=2.0,
        acceptance_rate=0.5,
        drafts=200.0,
        soft_cap=64,
        hard_cap=65,
        newest=30.0,
        request_steps=400.0,
    )
    base.update(changes)
    return PodWindow(**base)  # type: ignore[arg-type]


def test_the_generation_counter_is_parsed_and_gives_request_steps() -> None:
    body = """\
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0"} 3
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0"} 0
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0"} 1000
vllm:generation_tokens_total{engine="1"} 600
"""
    assert parse_metrics(body, time=0).generation_tokens == 1600.0

    def sample(time: float, generated: float | None, accepted: float) -> PodSample:
        return PodSample(
            time=time,
            running=3.0,
            waiting=0.0,
            kv_cache_usage=None,
            drafts=accepted / 2,
            draft_tokens=accepted * 2,
            accepted_tokens=accepted,
            soft_cap=None,
            hard_cap=None,
            cap_reported=True,
            generation_tokens=generated,
        )

    windows = MetricsWindow(30.0)
    windows.add("p", sample(0.0, 1000.0, 300.0))
    windows.add("p", sample(10.0, 1600.0, 540.0))
    summary = windows.summary("p", 10.0, 20.0)
    assert summary is not None
    assert summary.request_steps == 360.0  # 600 tokens generated, 240 of them accepted drafts
    # no generation counter: unknown, not zero
    bare = MetricsWindow(30.0)
    bare.add("p", sample(0.0, None, 300.0))
    bare.add("p", sample(10.0, None, 540.0))
    assert (summary := bare.summary("p", 10.0, 20.0)) is not None and summary.request_steps is None
    # the accepted tokens of samples without the generation counter do not count
    mixed = MetricsWindow(30.0)
    mixed.add("p", sample(0.0, None, 0.0))
    mixed.add("p", sample(5.0, 1000.0, 300.0))
    mixed.add("p", sample(10.0, 1600.0, 540.0))
    assert (summary := mixed.summary("p", 10.0, 20.0)) is not None and summary.request_steps == 360.0


def test_undrafted_running_worked_example() -> None:
    # half the request-steps draft, each gaining 2 tokens: 1 + 0.5 x 2 = 2 tokens per request-step,
    # in steps 1 + 0.5 x (1.2 - 1) = 1.1 times as long: 30 x 2 / 1.1 running without drafting
    assert undrafted_running(window(), COSTS) == pytest.approx(30 * 2 / 1.1)
    # every request-step drafted: 30 x 3 / 1.2
    assert undrafted_running(window(drafts=400.0), COSTS) == pytest.approx(75.0)
    # the draft length picks the curve: 2 tokens per draft at acceptance 0.5 is 1 accepted
    assert undrafted_running(window(accepted_per_draft=1.0, drafts=400.0), COSTS) == pytest.approx(
        30 * 2 / 1.1
    )


def test_a_verify_step_is_never_priced_below_a_plain_one() -> None:
    cheap = VerifyCosts(batch_sizes=(1, 64), by_draft_len=((4, (0.8, 0.8)),))
    assert undrafted_running(window(drafts=400.0), cheap) == pytest.approx(90.0)  # 30 x 3 / 1


def test_undrafted_running_is_never_below_the_running_count() -> None:
    # 0.1 accepted per draft in steps 1.2x as long: drafting made requests slower, not faster
    assert (
        undrafted_running(window(accepted_per_draft=0.1, acceptance_rate=0.025, drafts=400.0), COSTS) == 30.0
    )


def test_without_a_measured_speedup_the_running_count_is_used() -> None:
    assert undrafted_running(window(request_steps=None), COSTS) == 30.0
    assert undrafted_running(window(drafts=0.0, accepted_per_draft=None, acceptance_rate=None), COSTS) == 30.0
    assert undrafted_running(window(running=0.0), COSTS) == 0.0
    # more drafts than request-steps (counters read at different moments): the share is at most 1
    assert undrafted_running(window(drafts=500.0), COSTS) == pytest.approx(75.0)


def test_the_observation_sums_the_pods_only_when_asked() -> None:
    pods = [window(), window(running=10.0, request_steps=None)]
    obs = replica_observation(5.0, 2, 2, 0, pods, costs=COSTS)
    assert obs.running_total == 40.0
    assert obs.running_undrafted_total == pytest.approx(30 * 2 / 1.1 + 10.0)
    assert replica_observation(5.0, 2, 2, 0, pods).running_undrafted_total is None


def obs(running: float, undrafted: float | None) -> ReplicaObservation:
    return ReplicaObservation(
        time=100.0,
        current=1,
        ready=1,
        loading=0,
        observed=1,
        waiting_total=0.0,
        running_total=running,
        kv_cache_usage_mean=None,
        running_undrafted_total=undrafted,
    )


def test_the_running_target_counts_the_undrafted_requests() -> None:
    assert load_in_replicas(POLICY, obs(30.0, 60.0)) == {"running": pytest.approx(60 / 32)}
    decision, _ = decide_replicas(POLICY, obs(30.0, 60.0), ReplicaState())
    assert (decision.desired, decision.reason) == (2, "ScaleUp")
    assert decision.inputs["runningUndraftedTotal"] == 60.0
    # off: 30 running need one replica of 32
    off = dataclasses.replace(POLICY, running_as_undrafted=False)
    assert load_in_replicas(off, obs(30.0, 60.0)) == {"running": pytest.approx(30 / 32)}
    decision, _ = decide_replicas(off, obs(30.0, 60.0), ReplicaState())
    assert (decision.desired, decision.reason) == (1, "WithinTolerance")
    # not computed, or below the running count: the running count
    assert load_in_replicas(POLICY, obs(30.0, None)) == {"running": pytest.approx(30 / 32)}
    assert load_in_replicas(POLICY, obs(30.0, 20.0)) == {"running": pytest.approx(30 / 32)}


def test_the_spec_field_defaults_on_and_carries_the_costs() -> None:
    spec = AutoscalingSpec.model_validate(
        {"minReplicas": 1, "maxReplicas": 4, "targets": {"runningRequestsPerReplica": 32}}
    )
    assert spec.running_requests_as_undrafted is True
    policy = ReplicaPolicy.from_spec(spec, COSTS)
    assert (policy.running_as_undrafted, policy.costs) == (True, COSTS)
    off = AutoscalingSpec.model_validate(
        {
            "minReplicas": 1,
            "maxReplicas": 4,
            "targets": {"runningRequestsPerReplica": 32},
            "runningRequestsAsUndrafted": False,
        }
    )
    assert ReplicaPolicy.from_spec(off).running_as_undrafted is False
    # it is not a target: it belongs to spec.autoscaling, not to its targets
    with pytest.raises(ValueError, match="runningRequestsAsUndrafted"):
        AutoscalingSpec.model_validate(
            {"minReplicas": 1, "maxReplicas": 4, "targets": {"runningRequestsAsUndrafted": True}}
        )


def test_a_loop_tick_scales_for_the_undrafted_load() -> None:
    def sample(time: float, generated: float, drafts: float, accepted: float) -> PodSample:
        return PodSample(
            time=time,
            running=30.0,
            waiting=0.0,
            kv_cache_usage=0.3,
            drafts=drafts,
            draft_tokens=drafts * 4,
            accepted_tokens=accepted,
            soft_cap=64,
            hard_cap=65,
            cap_reported=True,
            generation_tokens=generated,
        )

    def tick(policy: ReplicaPolicy) -> tuple[int, float | None]:
        loop = ControlLoop(policy)
        # 10 s: 400 request-steps, 200 of them drafting 4 tokens with 2 accepted: 800 generated
        loop.observe("p", sample(0.0, 0.0, 0.0, 0.0))
        loop.observe("p", sample(10.0, 800.0, 200.0, 400.0))
        decided = loop.decide(10.0, 1, ["p"], 0)
        assert decided.replicas is not None and decided.replica_observation is not None
        return decided.replicas.desired, decided.replica_observation.running_undrafted_total

    desired, undrafted = tick(POLICY)
    assert desired == 2 and undrafted == pytest.approx(30 * 2 / 1.1)
    assert tick(dataclasses.replace(POLICY, running_as_undrafted=False)) == (1, None)
