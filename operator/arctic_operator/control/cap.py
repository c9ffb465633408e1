"""The speculation-cap policy: how many running requests on a pod may draft. Pure.

Drafting k tokens makes a verify step cost more (``VerifyCostModel``: measured step-time ratio at
batch size b) and yields ``1 + accepted_per_draft`` tokens per step instead of 1. It pays while
``(1 + accepted_per_draft) / cost(b) >= 1 + margin``: the largest such b is the break-even batch
size. The policy sets soft cap = that size (scaled down by queue pressure: waiting requests mean
the pod is saturated), hard cap = soft x hard_factor (at or above it nobody drafts), both within
the CR's bounds, with hysteresis, a minimum dwell time between changes and step limits. Missing
or incomplete metrics change nothing.

Details:

* Queue pressure: the target is the break-even size times running / (running + waiting), so it
  never rises when the queue grows. Hysteresis compares that unrounded target with the current cap
  (a target that wobbles across an integer does not move the cap); a change rounds it.
* Bounds: the soft cap stays within [min_cap, max_cap], both lowered to hard_cap_limit when that is
  smaller; hard = max(soft, ceil(soft x hard_factor)), at most hard_cap_limit. A current cap outside
  them (the spec changed) moves into them at once, with no dwell or hysteresis.
* Acceptance unknown (nothing drafted in the window): the last measured one is used; with none
  yet, the first decision sets the highest cap (optimistic, so that drafting happens and gets
  measured) and later ones hold.
* The first decision (``state.soft_cap`` None) applies at once; ``previous_*`` of that decision
  are the engine's effective caps, so an engine already at the target is not pushed again.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from arctic_operator.api import SpeculationSpec


def interpolate_log(xs: Sequence[float], ys: Sequence[float], x: float) -> float:
    """``ys`` at ``x``, linear in log(x) between the measured points ``xs`` (increasing, > 0), flat
    outside them. Step times and verify costs grow roughly with log(batch size) on a GPU."""
    if x <= xs[0]:
        return ys[0]
    if x >= xs[-1]:
        return ys[-1]
    upper = bisect.bisect_left(xs, x)
    lower = upper - 1
    weight = (math.log(x) - math.log(xs[lower])) / (math.log(xs[upper]) - math.log(xs[lower]))
    return ys[lower] + weight * (ys[upper] - ys[lower])


@dataclass(frozen=True)
class VerifyCostModel:
    """Step time with k draft tokens per request over step time without, by batch size;
    interpolated linearly in log(batch), flat outside. Default: measured on the H100 with the
    Llama-3.1-8B shape, k=3 (bench/results/verify-8b-*.json)."""

    batch_sizes: tuple[int, ...] = (1, 4, 16, 64)
    """Running requests (increasing, >= 1) at which the ratio was measured."""
    cost_ratios: tuple[float, ...] = (1.26, 1.33, 1.38, 1.67)
    """Step time with drafts / step time without, at each of ``batch_sizes``."""

    def __post_init__(self) -> None:
        if not self.batch_sizes or len(self.batch_sizes) != len(self.cost_ratios):
            raise ValueError("batch_sizes and cost_ratios must be non-empty and of the same length")
        if self.batch_sizes[0] < 1 or any(a >= b for a, b in itertools.pairwise(self.batch_sizes)):
            raise ValueError("batch_sizes must be increasing and >= 1")

    def cost(self, batch: float) -> float:
        return interpolate_log(self.batch_sizes, self.cost_ratios, batch)


@dataclass(frozen=True)
class CapPolicy:
    min_cap: int
    """spec.speculation.capController.min"""
    max_cap: int
    """spec.speculation.capController.max"""
    hard_cap_limit: int | None = None
    """spec.speculation.hardCap: the controller's hard cap never exceeds it."""
    hard_factor: float = 2.0
    """Hard cap = soft cap x this (rounded up). 2: between soft and hard, the first soft-cap requests
    still draft; from twice the break-even size on, drafting surely costs more than it gains."""
    margin: float = 0.1
    """Drafting must gain this fraction over not drafting (tokens per step / step-time ratio >=
    1 + margin) to count as paying. 0.1: the cost model and the acceptance are estimates."""
    hysteresis: float = 0.2
    """Ignore a change smaller than this fraction of the current cap (and smaller than 1)."""
    dwell_s: float = 30.0
    """Seconds between two changes of one pod's cap."""
    max_step_factor: float = 2.0
    """A change moves the cap at most this factor up or down (at least by 1)."""
    cost_model: VerifyCostModel = field(default_factory=VerifyCostModel)
    """Verify-step cost by batch size (the hardware and model the engine runs)."""

    @classmethod
    def from_spec(cls, spec: SpeculationSpec) -> CapPolicy:
        return cls(
            min_cap=spec.cap_controller.min,
            max_cap=spec.cap_controller.max,
            hard_cap_limit=spec.hard_cap,
        )

    def bounds(self) -> tuple[int, int]:
        """(lowest, highest) soft cap: [min_cap, max_cap] lowered to hard_cap_limit where above it."""
        high = self.max_cap if self.hard_cap_limit is None else min(self.max_cap, self.hard_cap_limit)
        high = max(0, high)
        return min(self.min_cap, high), high

    def hard_for(self, soft: int) -> int:
        """The hard cap that goes with a soft cap."""
        hard = max(soft, math.ceil(soft * self.hard_factor))
        return hard if self.hard_cap_limit is None else max(soft, min(hard, self.hard_cap_limit))


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
    soft_cap: int | None
    """The soft cap to have. None only when nothing was ever set and this tick could not decide
    (then ``previous_soft_cap`` is None too and nothing changes)."""
    hard_cap: int | None
    previous_soft_cap: int | None
    previous_hard_cap: int | None
    reason: str
    """CamelCase: Initial, Optimistic, Raised, Lowered, QueuePressure, OutOfBounds,
    WithinHysteresis, Dwell, AcceptanceUnknown, MetricsIncomplete."""
    message: str
    inputs: dict[str, Any] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return (self.soft_cap, self.hard_cap) != (self.previous_soft_cap, self.previous_hard_cap)


def break_even_batch(policy: CapPolicy, accepted_per_draft: float) -> int:
    """The largest batch size b in [1, max_cap] at which drafting pays:
    ``(1 + accepted_per_draft) / cost(b) >= 1 + margin``; 0 if it does not pay even at 1."""
    gain, need = 1 + accepted_per_draft, 1 + policy.margin
    model = policy.cost_model

    def pays(batch: int) -> bool:
        return gain / model.cost(batch) >= need

    if policy.max_cap > model.batch_sizes[-1] and pays(policy.max_cap):
        return policy.max_cap  # the cost is flat beyond the last measured size
    for batch in range(min(policy.max_cap, model.batch_sizes[-1]), 0, -1):
        if pays(batch):
            return batch
    return 0


def queue_factor(running: float, waiting: float) -> float:
    """running / (running + waiting): 1 without a queue, towards 0 as the queue grows."""
    total = running + waiting
    return 1.0 if total <= 0 else max(0.0, running) / total


def decide_cap(policy: CapPolicy, obs: CapObservation, state: CapState) -> tuple[CapDecision, CapState]:
    """One pod's speculation cap for this tick, and the state for the next one. Pure."""
    now = obs.time
    low, high = policy.bounds()
    first = state.soft_cap is None
    previous_soft = obs.effective_soft_cap if first else state.soft_cap
    previous_hard = obs.effective_hard_cap if first else state.hard_cap
    inputs: dict[str, Any] = {
        "running": round(obs.running, 3),
        "waiting": round(obs.waiting, 3),
        "acceptedPerDraft": None if obs.accepted_per_draft is None else round(obs.accepted_per_draft, 3),
        "effectiveSoftCap": obs.effective_soft_cap,
        "effectiveHardCap": obs.effective_hard_cap,
        "minCap": low,
        "maxCap": high,
        "hardCapLimit": policy.hard_cap_limit,
    }
    current = f"soft {previous_soft}, hard {previous_hard}"

    def hold(reason: str, message: str, next_state: CapState) -> tuple[CapDecision, CapState]:
        decision = CapDecision(
            now, previous_soft, previous_hard, previous_soft, previous_hard, reason, message, inputs
        )
        return decision, next_state

    def apply(soft: int, reason: str, message: str, next_state: CapState) -> tuple[CapDecision, CapState]:
        hard = policy.hard_for(soft)
        decision = CapDecision(now, soft, hard, previous_soft, previous_hard, reason, message, inputs)
        return decision, CapState(
            soft_cap=soft,
            hard_cap=hard,
            last_change=now,
            last_accepted_per_draft=next_state.last_accepted_per_draft,
        )

    if not obs.complete:
        return hold(
            "MetricsIncomplete", f"Holding the cap ({current}): the pod's metrics are incomplete.", state
        )
    if obs.accepted_per_draft is not None:
        state = dataclasses.replace(state, last_accepted_per_draft=obs.accepted_per_draft)
    accepted = state.last_accepted_per_draft
    out_of_bounds = not first and not (
        state.soft_cap is not None
        and low <= state.soft_cap <= high
        and state.hard_cap == policy.hard_for(state.soft_cap)
    )

    if accepted is None:
        inputs["acceptedPerDraftUsed"] = None
        if first:
            return apply(
                high,
                "Optimistic",
                f"Soft cap {high}: nothing drafted yet, so drafting is allowed "
                "up to the highest cap until acceptance is measured.",
                state,
            )
        if out_of_bounds and state.soft_cap is not None:
            soft = max(low, min(high, state.soft_cap))
            return apply(
                soft,
                "OutOfBounds",
                f"Soft cap {state.soft_cap} -> {soft}: outside the bounds "
                f"[{low}, {high}] (acceptance not measured yet).",
                state,
            )
        return hold(
            "AcceptanceUnknown",
            f"Holding the cap ({current}): nothing drafted yet, acceptance unknown.",
            state,
        )

    break_even = break_even_batch(policy, accepted)
    factor = queue_factor(obs.running, obs.waiting)
    wanted = max(float(low), min(float(high), break_even * factor))
    target = max(low, min(high, math.floor(wanted + 0.5)))
    inputs.update(
        acceptedPerDraftUsed=round(accepted, 3),
        breakEvenBatch=break_even,
        queueFactor=round(factor, 3),
        target=round(wanted, 3),
    )
    why = f"drafting pays up to {break_even} running at {accepted:.2f} accepted per draft"
    if factor < 1:
        why += f", x{factor:.2f} for {obs.waiting:g} waiting"
    cap = state.soft_cap
    if cap is None or out_of_bounds:
        reason = "Initial" if cap is None else "OutOfBounds"
        return apply(target, reason, f"Soft cap {previous_soft} -> {target}: {why}.", state)
    threshold = max(1.0, policy.hysteresis * cap)
    if abs(wanted - cap) < threshold:
        return hold(
            "WithinHysteresis",
            f"Holding soft cap {cap}: {why}, target {wanted:.1f} is within {threshold:g} of it.",
            state,
        )
    if state.last_change is not None and now - state.last_change < policy.dwell_s:
        return hold(
            "Dwell",
            f"Holding soft cap {cap}: {why}, target {target}, but it changed "
            f"{now - state.last_change:.0f}s ago (dwell {policy.dwell_s:g}s).",
            state,
        )
    if target > cap:
        ceiling = max(cap + 1, math.floor(cap * policy.max_step_factor))
        soft, reason = min(target, ceiling), "Raised"
    else:
        floor = min(cap - 1, math.ceil(cap / policy.max_step_factor))
        soft = max(target, floor)
        reason = "QueuePressure" if factor < 1 and min(high, break_even) > soft else "Lowered"
    soft = max(low, min(high, soft))
    limited = f" (step limit; target {target})" if soft != target else ""
    return apply(soft, reason, f"Soft cap {cap} -> {soft}{limited}: {why}.", state)
