"""The replica policy: how many engine pods an ArcticInferenceService needs. Pure.

Like Kubernetes' HPA, per target: desired = ceil(total observed / target per replica) (for the
KV-cache fraction, ceil(ready x mean usage / target)); the recommendation is the largest over the
targets set. Differences from HPA, all because a replica takes minutes to load a model:
a tolerance band, scale-up only for load that lasted ``scale_up_window_s`` (the smallest
recommendation of that window), scale-down only after ``scale_down_window_s`` of low load (the
largest of that window), cooldowns after each change, step limits, and no scale-down while pods
are still loading or while any ready pod's metrics are missing (a dead metrics source never
removes capacity). Every decision carries its inputs and a reason a person can read in status.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from arctic_operator.api import AutoscalingSpec


@dataclass(frozen=True)
class ReplicaPolicy:
    """Settings, from spec.autoscaling (``from_spec``) plus operator-wide defaults."""

    min_replicas: int
    max_replicas: int
    waiting_per_replica: float | None = None
    running_per_replica: float | None = None
    kv_cache_usage: float | None = None
    scale_up_window_s: float = 60.0
    scale_down_window_s: float = 300.0
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

    @classmethod
    def from_spec(cls, spec: AutoscalingSpec) -> ReplicaPolicy:
        raise NotImplementedError


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


@dataclass(frozen=True)
class ReplicaState:
    """What the policy remembers between ticks (kept in memory by the controller)."""

    recommendations: tuple[tuple[float, int], ...] = ()
    """(time, raw recommendation) within the longest window."""
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
    MetricsIncomplete, NoMetrics, AtMinimum, AtMaximum, ..."""
    message: str
    """One sentence with the numbers, for status and events."""
    inputs: dict[str, Any] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return self.desired != self.current


def decide_replicas(
    policy: ReplicaPolicy, obs: ReplicaObservation, state: ReplicaState
) -> tuple[ReplicaDecision, ReplicaState]:
    raise NotImplementedError
