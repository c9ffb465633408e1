"""The speculation-cap policy: how many running requests on a pod may draft. Pure.

Drafting k tokens makes a verify step cost more (``VerifyCostModel``: measured step-time ratio at
batch size b) and yields ``1 + accepted_per_draft`` tokens per step instead of 1. It pays while
``(1 + accepted_per_draft) / cost(b) >= 1 + margin``: the largest such b is the break-even batch
size. The policy sets soft cap = that size (scaled down by queue pressure: waiting requests mean
the pod is saturated), hard cap = soft x hard_factor (at or above it nobody drafts), both within
the CR's bounds, with hysteresis, a minimum dwell time between changes and step limits. Missing
or incomplete metrics change nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from arctic_operator.api import SpeculationSpec


@dataclass(frozen=True)
class VerifyCostModel:
    """Step time with k draft tokens per request over step time without, by batch size;
    interpolated linearly in log(batch), flat outside. Default: measured on the H100 with the
    Llama-3.1-8B shape, k=3 (bench/results/verify-8b-*.json)."""

    batch_sizes: tuple[int, ...] = (1, 4, 16, 64)
    cost_ratios: tuple[float, ...] = (1.26, 1.33, 1.38, 1.67)

    def cost(self, batch: float) -> float:
        raise NotImplementedError


@dataclass(frozen=True)
class CapPolicy:
    min_cap: int
    """spec.speculation.capController.min"""
    max_cap: int
    """spec.speculation.capController.max"""
    hard_cap_limit: int | None = None
    """spec.speculation.hardCap: the controller's hard cap never exceeds it."""
    hard_factor: float = 2.0
    margin: float = 0.1
    hysteresis: float = 0.2
    """Ignore a change smaller than this fraction of the current cap (and smaller than 1)."""
    dwell_s: float = 30.0
    """Seconds between two changes of one pod's cap."""
    max_step_factor: float = 2.0
    """A change moves the cap at most this factor up or down (at least by 1)."""
    cost_model: VerifyCostModel = field(default_factory=VerifyCostModel)

    @classmethod
    def from_spec(cls, spec: SpeculationSpec) -> CapPolicy:
        raise NotImplementedError


@dataclass(frozen=True)
class CapObservation:
    time: float
    running: float
    waiting: float
    accepted_per_draft: float | None
    """None: nothing was drafted in the window (acceptance unknown)."""
    effective_soft_cap: int | None
    effective_hard_cap: int | None
    complete: bool
    """False: metrics missing or stale; the policy holds."""


@dataclass(frozen=True)
class CapState:
    soft_cap: int | None = None
    """Last soft cap the controller set (None: not yet)."""
    hard_cap: int | None = None
    last_change: float | None = None
    last_accepted_per_draft: float | None = None
    """Last measured acceptance, used while nothing is drafted."""


@dataclass(frozen=True)
class CapDecision:
    time: float
    soft_cap: int
    hard_cap: int | None
    previous_soft_cap: int | None
    previous_hard_cap: int | None
    reason: str
    """CamelCase: Raised, Lowered, QueuePressure, WithinHysteresis, Dwell, MetricsIncomplete, ..."""
    message: str
    inputs: dict[str, Any] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return (self.soft_cap, self.hard_cap) != (self.previous_soft_cap, self.previous_hard_cap)


def decide_cap(policy: CapPolicy, obs: CapObservation, state: CapState) -> tuple[CapDecision, CapState]:
    raise NotImplementedError
