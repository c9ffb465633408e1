"""control.loop: one ControlLoop turns samples into the replica and cap decisions, for the operator
and the simulator alike (exact observations and decisions on worked examples)."""

from __future__ import annotations

import pytest

from arctic_operator.control.cap import CapPolicy, CapState, VerifyCostModel
from arctic_operator.control.loop import ControlLoop, cap_observation, replica_observation, waiting_growth
from arctic_operator.control.metrics import PodSample, PodWindow
from arctic_operator.control.replicas import ReplicaPolicy

CAPS = CapPolicy(min_cap=1, max_cap=64, cost_model=VerifyCostModel())
REPLICAS = ReplicaPolicy(min_replicas=1, max_replicas=4, running_per_replica=32.0, scale_up_window_s=0.0)


def sample(
    time: float,
    running: float,
    waiting: float = 0.0,
    drafts: float = 0.0,
    tokens: float = 0.0,
    accepted: float = 0.0,
) -> PodSample:
    return PodSample(
        time=time,
        running=running,
        waiting=waiting,
        kv_cache_usage=0.5,
        drafts=drafts,
        draft_tokens=tokens,
        accepted_tokens=accepted,
        soft_cap=None,
        hard_cap=None,
        cap_reported=True,
    )


def window(**changes: object) -> PodWindow:
    base: dict[str, object] = dict(
        pod="p",
        samples=3,
        running=10.0,
        waiting=2.0,
        waiting_last=3.0,
        kv_cache_usage=0.4,
        accepted_per_draft=1.5,
        acceptance_rate=0.5,
        drafts=100.0,
        soft_cap=8,
        hard_cap=9,
        newest=10.0,
    )
    base.update(changes)
    return PodWindow(**base)  # type: ignore[arg-type]


def test_waiting_growth_is_the_least_squares_slope() -> None:
    assert waiting_growth([]) is None
    assert waiting_growth([(0.0, 5.0)]) is None
    assert waiting_growth([(3.0, 1.0), (3.0, 9.0)]) is None  # one time: no slope
    assert waiting_growth([(0.0, 0.0), (5.0, 10.0)]) == pytest.approx(2.0)
    assert waiting_growth([(0.0, 0.0), (5.0, 10.0), (10.0, 10.0)]) == pytest.approx(1.0)
    assert waiting_growth([(0.0, 9.0), (10.0, 4.0)]) == pytest.approx(-0.5)
    assert waiting_growth([(0.0, 0.0), (0.5, 1.0)]) == pytest.approx(2.0)  # a short spread counts
    assert waiting_growth([(0.0, 7.0), (1.0, 7.0), (2.0, 7.0)]) == 0.0


def test_cap_observation_from_a_window() -> None:
    obs = cap_observation(12.0, window())
    assert (obs.time, obs.running, obs.waiting, obs.complete) == (12.0, 10.0, 2.0, True)
    assert (obs.accepted_per_draft, obs.draft_len) == (1.5, 3.0)  # 1.5 per draft / 0.5 per token
    assert (obs.effective_soft_cap, obs.effective_hard_cap) == (8, 9)
    assert cap_observation(12.0, window(accepted_per_draft=None, acceptance_rate=None)).draft_len is None
    assert cap_observation(12.0, window(acceptance_rate=0.0)).draft_len is None
    assert obs.prompt_tokens is None
    assert cap_observation(12.0, window(prompt_tokens_per_request=812.5)).prompt_tokens == 812.5
    missing = cap_observation(12.0, None)
    assert (missing.complete, missing.accepted_per_draft, missing.running) == (False, None, 0.0)


def test_replica_observation_sums_the_windows() -> None:
    obs = replica_observation(
        7.0, 2, 2, 1, [window(), window(running=6.0, waiting=1.0, kv_cache_usage=None)], waiting_growth=0.5
    )
    assert (obs.time, obs.current, obs.ready, obs.loading, obs.observed) == (7.0, 2, 2, 1, 2)
    assert (obs.running_total, obs.waiting_total, obs.kv_cache_usage_mean) == (16.0, 3.0, 0.4)
    assert obs.waiting_growth == 0.5
    assert replica_observation(7.0, 1, 1, 0, []).kv_cache_usage_mean is None
    both = replica_observation(7.0, 2, 2, 0, [window(kv_cache_usage=0.2), window(kv_cache_usage=0.6)])
    assert both.kv_cache_usage_mean == pytest.approx(0.4)  # a mean, not a sum or a product


def test_the_loops_default_windows() -> None:
    loop = ControlLoop()
    assert (loop.window.window_s, loop.max_age_s) == (30.0, 20.0)
    assert (loop.replica_policy, loop.cap_policy) == (None, None)


def test_a_tick_decides_replicas_and_caps_from_the_windows() -> None:
    loop = ControlLoop(REPLICAS, CAPS, window_s=30.0, max_age_s=20.0)
    for t in (0.0, 5.0, 10.0):
        loop.observe("a", sample(t, running=40.0, drafts=10 * t, tokens=30 * t, accepted=6 * t))
        loop.observe("b", sample(t, running=40.0))
    decided = loop.decide(10.0, current=2, ready=["a", "b"], loading=0)
    assert set(decided.windows) == {"a", "b"}
    assert decided.replica_observation is not None
    assert decided.replica_observation.running_total == 80.0
    assert decided.replicas is not None and decided.replicas.reason == "ScaleUp"
    assert decided.replicas.desired == 3  # 80 running / 32 per replica
    cap_a = decided.caps["a"]
    assert cap_a.inputs["acceptedPerDraft"] == 0.6 and cap_a.inputs["draftLen"] == 3.0
    assert (cap_a.soft_cap, cap_a.hard_cap, cap_a.reason) == (22, 23, "Initial")
    cap_b = decided.caps["b"]
    assert (cap_b.soft_cap, cap_b.reason) == (64, "Optimistic")  # nothing drafted on b yet
    state = loop.cap_states["a"]
    assert state.last_draft_len == pytest.approx(3.0)
    assert state == CapState(22, 23, 10.0, 0.6, last_measured=10.0, last_draft_len=state.last_draft_len)


def test_pods_without_fresh_samples_are_not_observed_and_hold() -> None:
    loop = ControlLoop(REPLICAS, CAPS, window_s=30.0, max_age_s=20.0)
    loop.observe("a", sample(0.0, running=10.0))
    decided = loop.decide(25.0, current=1, ready=["a"], loading=0)
    assert decided.windows == {}
    assert decided.replicas is not None and decided.replicas.reason == "NoMetrics"
    assert decided.caps["a"].reason == "MetricsIncomplete"
    only = loop.decide(25.0, current=1, ready=["a"], loading=0, observed=[])
    assert only.windows == {}


def test_growth_is_measured_over_the_window_when_every_pod_is_observed() -> None:
    loop = ControlLoop(REPLICAS, None, window_s=30.0)
    for t, waiting in ((0.0, 0.0), (5.0, 10.0), (10.0, 20.0)):
        loop.observe("a", sample(t, running=1.0, waiting=waiting))
        loop.decide(t, current=1, ready=["a"], loading=0)
    assert loop.waiting_history == [(0.0, 0.0), (5.0, 10.0), (10.0, 20.0)]
    loop.observe("a", sample(40.0, running=1.0, waiting=20.0))
    decided = loop.decide(40.0, current=1, ready=["a"], loading=0)
    assert loop.waiting_history == [(10.0, 20.0), (40.0, 20.0)]  # older than the window: dropped
    assert decided.replica_observation is not None and decided.replica_observation.waiting_growth == 0.0
    loop.decide(45.0, current=2, ready=["a", "b"], loading=0)  # b unobserved: no total recorded
    assert loop.waiting_history[-1] == (40.0, 20.0)
    assert decided.caps == {}  # cap controller off


def test_forget_drops_gone_pods() -> None:
    loop = ControlLoop(None, CAPS)
    loop.observe("a", sample(0.0, running=1.0))
    loop.observe("b", sample(0.0, running=1.0))
    loop.decide(0.0, current=2, ready=["a", "b"], loading=0)
    assert set(loop.cap_states) == {"a", "b"}
    loop.forget(["b"])
    assert set(loop.cap_states) == {"b"} and loop.window.pods() == ("b",)
    assert loop.states() is loop.cap_states
