"""The replica policy: how many engine pods an ArcticInferenceService needs. Pure.

Like Kubernetes' HPA, per target: desired = ceil(total observed / target per replica) (for the
KV-cache fraction, ceil(ready x mean usage / target)); the recommendation is the largest over the
targets set. Differences from HPA, all because a replica takes minutes to load a model:
a tolerance band, scale-up only for load that lasted ``scale_up_window_s`` (the smallest
recommendation of that window), scale-down only after ``scale_down_window_s`` of low load (the
largest of that window), cooldowns after each change, step limits, and no scale-down while pods
are still loading or while any ready pod's metrics are missing (a dead metrics source never
removes capacity). Every decision carries its inputs and a reason a person can read in status.

Details:

* Recommendations are a step function of time: each holds until the next. A window
  ``[now - w, now]`` is judged by the recommendation in effect at its start and every one since;
  until the policy has seen a whole window (a fresh controller, after an operator restart) it does
  not scale in that direction (reason Stabilizing).
* Within tolerance (|raw load / target / current - 1| <= tolerance, on the unrounded load) the
  recommendation recorded is the current count, so noise inside the band never builds up.
* With some ready pods' metrics missing (``observed < ready``) the load is summed over the
  observed pods only: it can only understate the need, so a scale-up it shows is real, and it is
  recorded as at least the current count so that it never votes for a later scale-down.
* A current count outside [min, max] (the spec's bounds changed) moves into range at once.
* With ``running_as_undrafted`` the running target counts the running requests as they would be
  without drafting (``ReplicaObservation.running_undrafted_total``, computed per pod by
  ``control.loop.undrafted_running``), never fewer than counted: drafting's shorter requests do not
  release replicas.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from arctic_operator.api import AutoscalingSpec
from arctic_operator.control.cost import DEFAULT_COSTS, VerifyCosts


@dataclass(frozen=True)
class ReplicaPolicy:
    """Settings, from spec.autoscaling (``from_spec``) plus operator-wide defaults."""

    min_replicas: int
    """Fewest replicas (spec.autoscaling.minReplicas, >= 1)."""
    max_replicas: int
    """Most replicas (spec.autoscaling.maxReplicas): the service's GPU budget."""
    waiting_per_replica: float | None = None
    """Requests, mean waiting per replica (targets.waitingRequestsPerReplica); None: not a target."""
    running_per_replica: float | None = None
    """Requests, mean running per replica (targets.runningRequestsPerReplica); None: not a target."""
    kv_cache_usage: float | None = None
    """Fraction 0..1, mean KV cache usage over replicas (targets.kvCacheUsage); None: not a target."""
    scale_up_window_s: float = 60.0
    """Seconds (scaleUp.stabilizationWindowSeconds). Scale up to the smallest recommendation of
    this window: load must last it. 60: a shorter spike drains before a new replica could load."""
    scale_down_window_s: float = 300.0
    """Seconds (scaleDown.stabilizationWindowSeconds). Scale down to the largest recommendation of
    this window. 300, HPA's default: reloading a model costs more than a few idle minutes."""
    tolerance: float = 0.1
    """No change while every observed/target ratio is within 1 +- tolerance (HPA's default 0.1)."""
    scale_up_cooldown_s: float = 30.0
    """Seconds after any change before the next scale-up."""
    scale_down_cooldown_s: float = 120.0
    """Seconds after any change before the next scale-down."""
    max_scale_up_step: int = 4
    """Most replicas added per decision, or doubling if larger (HPA: max(4 pods, 100%))."""
    max_scale_down_step: int = 1
    """Most replicas removed per decision: one at a time (model loads are expensive to redo)."""
    queue_growth_lead_s: float = 0.0
    """Seconds (spec.autoscaling.burst.queueGrowthLeadSeconds). While the requests in the engines
    (running + waiting) grow, the load is projected this far ahead at the growth rate, and a
    scale-up for it skips the scale-up window: a replica is asked for when a burst starts, not
    once it has lasted. 0: off (level only)."""
    burst_headroom: int = 0
    """Replicas (spec.autoscaling.burst.headroomReplicas) kept beyond what the load needs, so that a
    burst lands on spare capacity while new replicas load (minutes). 0: none."""
    running_as_undrafted: bool = False
    """spec.autoscaling.runningRequestsAsUndrafted: the running target counts each pod's
    running requests as they would be without drafting (``ReplicaObservation.running_undrafted_total``),
    so drafting's shorter requests do not release replicas. False here (a bare policy counts what
    vLLM reports); the spec's default is True."""
    costs: VerifyCosts = DEFAULT_COSTS
    """Verify-cost curves (the operator's cost file): what a drafting step costs, for
    ``running_as_undrafted``."""

    @classmethod
    def from_spec(cls, spec: AutoscalingSpec, costs: VerifyCosts = DEFAULT_COSTS) -> ReplicaPolicy:
        return cls(
            min_replicas=spec.min_replicas,
            max_replicas=spec.max_replicas,
            waiting_per_replica=spec.targets.waiting_requests_per_replica,
            running_per_replica=spec.targets.running_requests_per_replica,
            kv_cache_usage=spec.targets.kv_cache_usage,
            scale_up_window_s=float(spec.scale_up.stabilization_window_seconds),
            scale_down_window_s=float(spec.scale_down.stabilization_window_seconds),
            queue_growth_lead_s=float(spec.burst.queue_growth_lead_seconds),
            burst_headroom=spec.burst.headroom_replicas,
            running_as_undrafted=spec.running_requests_as_undrafted,
            costs=costs,
        )


@dataclass(frozen=True)
class ReplicaObservation:
    """What the controller saw this tick."""

    time: float
    current: int
    """The workload's spec.replicas now."""
    ready: int
    """Ready pods."""
    loading: int
    """Pods that exist but are not ready yet (starting, loading the model)."""
    observed: int
    """Ready pods with a complete, fresh metrics window (<= ready)."""
    waiting_total: float
    """Sum over observed pods of their mean waiting requests."""
    running_total: float
    """Sum over observed pods of their mean running requests."""
    kv_cache_usage_mean: float | None
    """Mean over observed pods of KV cache usage, if reported."""
    waiting_growth: float | None = None
    """Requests per second: growth rate of the requests in the engines (running + waiting) over
    the window; None when unknown."""
    running_undrafted_total: float | None = None
    """Sum over observed pods of their running requests as they would be without drafting
    (``control.loop.undrafted_running``, at least their running requests); None when not computed."""


@dataclass(frozen=True)
class ReplicaState:
    """What the policy remembers between ticks (kept in memory by the controller)."""

    recommendations: tuple[tuple[float, int], ...] = ()
    """(time, raw recommendation) within the longest window (plus the one in effect at its start)."""
    last_change: float | None = None
    """When the policy last changed the replica count."""


@dataclass(frozen=True)
class ReplicaDecision:
    time: float
    current: int
    desired: int
    recommendation: int | None
    """The raw (unstabilized) recommendation; None when it could not be computed."""
    reason: str
    """CamelCase: ScaleUp, ScaleDown, WithinTolerance, Stabilizing, Cooldown, PodsLoading,
    MetricsIncomplete, NoMetrics, NoReadyPods, AtMinimum, AtMaximum, BelowMinimum, AboveMaximum,
    Steady, NoTargets."""
    message: str
    """One sentence with the numbers, for status and events."""
    inputs: dict[str, Any] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return self.desired != self.current


_EPSILON = 1e-9
"""Slack for ceil() so that 10.000000001 / 5 stays 2 replicas (float sums of means)."""


def growth_ahead(policy: ReplicaPolicy, obs: ReplicaObservation) -> float:
    """Requests the load grows by within ``queue_growth_lead_s`` at the observed rate (0 unless
    it grows)."""
    if policy.queue_growth_lead_s <= 0 or obs.waiting_growth is None or obs.waiting_growth <= 0:
        return 0.0
    return obs.waiting_growth * policy.queue_growth_lead_s


def load_in_replicas(policy: ReplicaPolicy, obs: ReplicaObservation) -> dict[str, float]:
    """Per target set: the replicas the observed load needs, unrounded, plus the burst headroom.
    The projected growth adds to the running requests (to the waiting ones without a running
    target)."""
    needs: dict[str, float] = {}
    ahead = growth_ahead(policy, obs)
    headroom = float(policy.burst_headroom)
    if policy.waiting_per_replica is not None:
        grown = ahead if policy.running_per_replica is None else 0.0
        needs["waiting"] = (obs.waiting_total + grown) / policy.waiting_per_replica + headroom
    if policy.running_per_replica is not None:
        running = obs.running_total
        if policy.running_as_undrafted and obs.running_undrafted_total is not None:
            running = max(running, obs.running_undrafted_total)
        needs["running"] = (running + ahead) / policy.running_per_replica + headroom
    if policy.kv_cache_usage is not None and obs.kv_cache_usage_mean is not None:
        needs["kvCacheUsage"] = obs.ready * obs.kv_cache_usage_mean / policy.kv_cache_usage + headroom
    return needs


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def _window(history: tuple[tuple[float, int], ...], now: float, window_s: float) -> list[int] | None:
    """The recommendations that held during ``[now - window_s, now]``: the one in effect at its start
    and every one since; None when the history does not reach back to its start."""
    start = now - window_s
    if not history or history[0][0] > start:
        return None
    in_effect_at_start = max(i for i, (time, _) in enumerate(history) if time <= start)
    return [recommendation for _, recommendation in history[in_effect_at_start:]]


def _prune(
    history: tuple[tuple[float, int], ...], now: float, keep_s: float
) -> tuple[tuple[float, int], ...]:
    """Drop what no window can use: keep those since ``now - keep_s`` and the one in effect then."""
    start = now - keep_s
    older = [i for i, (time, _) in enumerate(history) if time <= start]
    return history[older[-1] :] if older else history


def decide_replicas(
    policy: ReplicaPolicy, obs: ReplicaObservation, state: ReplicaState
) -> tuple[ReplicaDecision, ReplicaState]:
    """The replica count for this tick, and the state for the next one. Pure."""
    now, current = obs.time, obs.current
    low, high = policy.min_replicas, max(policy.min_replicas, policy.max_replicas)
    history = _prune(state.recommendations, now, max(policy.scale_up_window_s, policy.scale_down_window_s))
    inputs: dict[str, Any] = {
        "current": current,
        "ready": obs.ready,
        "loading": obs.loading,
        "observed": obs.observed,
        "waitingTotal": round(obs.waiting_total, 3),
        "runningTotal": round(obs.running_total, 3),
        "runningUndraftedTotal": None
        if obs.running_undrafted_total is None
        else round(obs.running_undrafted_total, 3),
        "kvCacheUsageMean": None if obs.kv_cache_usage_mean is None else round(obs.kv_cache_usage_mean, 3),
        "waitingGrowth": None if obs.waiting_growth is None else round(obs.waiting_growth, 3),
        "minReplicas": low,
        "maxReplicas": high,
    }

    def decide(
        desired: int, reason: str, message: str, recommendation: int | None = None
    ) -> tuple[ReplicaDecision, ReplicaState]:
        decision = ReplicaDecision(now, current, desired, recommendation, reason, message, inputs)
        last_change = now if desired != current else state.last_change
        return decision, ReplicaState(recommendations=history, last_change=last_change)

    if current < low:
        return decide(
            low, "BelowMinimum", f"{current} replicas is below the minimum {low}: scaling to {low}."
        )
    if current > high:
        return decide(
            high, "AboveMaximum", f"{current} replicas is above the maximum {high}: scaling to {high}."
        )
    if obs.ready == 0:
        return decide(
            current, "NoReadyPods", f"No ready pods ({obs.loading} loading): holding {current} replicas."
        )
    if obs.observed == 0:
        return decide(
            current,
            "NoMetrics",
            f"No metrics from any of the {obs.ready} ready pods: holding {current} replicas.",
        )
    needs = load_in_replicas(policy, obs)
    if not needs:
        return decide(current, "NoTargets", f"No target can be evaluated: holding {current} replicas.")

    target, need = max(needs.items(), key=lambda item: item[1])
    inputs["needs"] = {name: round(value, 3) for name, value in needs.items()}
    ratio = need / current
    within_tolerance = abs(ratio - 1) <= policy.tolerance
    # clamped before rounding: a huge need (a tiny target) stays a number, and the maximum holds
    unclamped = math.ceil(min(need, float(high) + 1.0) - _EPSILON)
    recommendation = current if within_tolerance else _clamp(unclamped, low, high)
    incomplete = obs.observed < obs.ready
    # Partial metrics understate the load: they may ask for more replicas, never vote for fewer.
    history = (*history, (now, max(recommendation, current) if incomplete else recommendation))
    inputs["recommendation"] = recommendation
    load = f"the load ({target}) needs {need:.2f} replicas"
    if incomplete:
        load += f" by the {obs.observed} of {obs.ready} ready pods with metrics"

    if within_tolerance:
        return decide(
            current,
            "WithinTolerance",
            f"Holding {current} replicas: {load}, within {policy.tolerance:.0%} of {current}.",
            recommendation,
        )
    if recommendation > current:
        held = _window(history, now, policy.scale_up_window_s)
        if growth_ahead(policy, obs) > 0:
            held = [recommendation]  # a growing load: act now, not once it has lasted
            inputs["growthAhead"] = round(growth_ahead(policy, obs), 3)
        if held is None or min(held) <= current:
            lasted = "" if held is None else f" (the smallest of the window is {min(held)})"
            return decide(
                current,
                "Stabilizing",
                f"Holding {current} replicas: {load}, {recommendation} once it lasts "
                f"{policy.scale_up_window_s:g}s{lasted}.",
                recommendation,
            )
        if state.last_change is not None and now - state.last_change < policy.scale_up_cooldown_s:
            return decide(
                current,
                "Cooldown",
                f"Holding {current} replicas: {load}, but the last change was "
                f"{now - state.last_change:.0f}s ago (scale-up cooldown {policy.scale_up_cooldown_s:g}s).",
                recommendation,
            )
        step = max(policy.max_scale_up_step, current)
        desired = min(min(held), current + step, high)
        limited = f" (at most {step} more per step)" if desired < min(held) else ""
        return decide(
            desired,
            "ScaleUp",
            f"Scaling up from {current} to {desired} replicas{limited}: {load} for "
            f"{policy.scale_up_window_s:g}s.",
            recommendation,
        )
    if recommendation < current:
        if obs.loading > 0:
            return decide(
                current,
                "PodsLoading",
                f"Holding {current} replicas: {load}, but {obs.loading} pods are still loading.",
                recommendation,
            )
        if incomplete:
            return decide(
                current,
                "MetricsIncomplete",
                f"Holding {current} replicas: {load}, but {obs.ready - obs.observed} ready pods "
                "have no metrics.",
                recommendation,
            )
        held = _window(history, now, policy.scale_down_window_s)
        if held is None or max(held) >= current:
            lasted = "" if held is None else f" (the largest of the window is {max(held)})"
            return decide(
                current,
                "Stabilizing",
                f"Holding {current} replicas: {load}, {recommendation} once it lasts "
                f"{policy.scale_down_window_s:g}s{lasted}.",
                recommendation,
            )
        if state.last_change is not None and now - state.last_change < policy.scale_down_cooldown_s:
            return decide(
                current,
                "Cooldown",
                f"Holding {current} replicas: {load}, but the last change was "
                f"{now - state.last_change:.0f}s ago (scale-down cooldown "
                f"{policy.scale_down_cooldown_s:g}s).",
                recommendation,
            )
        desired = max(max(held), current - policy.max_scale_down_step)
        limited = f" (at most {policy.max_scale_down_step} fewer per step)" if desired > max(held) else ""
        return decide(
            desired,
            "ScaleDown",
            f"Scaling down from {current} to {desired} replicas{limited}: {load} for "
            f"{policy.scale_down_window_s:g}s.",
            recommendation,
        )
    if unclamped > high:
        reason, why = "AtMaximum", f"the maximum is {high}"
    elif unclamped < low:
        reason, why = "AtMinimum", f"the minimum is {low}"
    else:
        reason, why = "Steady", "the recommendation"
    return decide(current, reason, f"Holding {current} replicas: {load}; {current} is {why}.", recommendation)
