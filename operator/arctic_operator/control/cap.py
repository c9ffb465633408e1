"""The speculation-cap policy: how many running requests on a pod may draft. Pure.

Goodput: drafting makes a verify step cost more (``VerifyCostModel``: measured step-time ratio at
batch size b for the pod's mean draft length) and yields ``1 + accepted_per_draft`` tokens per
step instead of 1. It pays while ``(1 + accepted_per_draft) / cost(b) >= 1 + margin``: the largest
such b is the break-even batch size. The policy sets soft cap = that size and hard cap = soft + 1
(from there on nobody drafts: per step, drafting some requests of a batch pays exactly when drafting
all of them does), both within the CR's bounds, with hysteresis, a minimum dwell time between
changes and step limits. A fixed cap is one of its choices. Missing or incomplete metrics change
nothing.

Details:

* Queues: the break-even size does not depend on the queue. A queue means the batch is full, and
  the hard cap stops drafting at every batch size where it costs more than it gains, so under a
  queue drafting never makes things worse than drafting off (by the cost model).
* Zero acceptance (drafting does not pay even for one request): soft = hard = min cap, so nobody
  drafts, at once (no step limit: it is the safe direction). After ``acceptance_max_age_s`` the
  caps let a lone request draft again (Probe) to measure acceptance anew.
* Bounds: the soft cap stays within [min_cap, max_cap], both lowered to hard_cap_limit when that is
  smaller; hard = soft + 1 (or ceil(soft x hard_factor)), at most hard_cap_limit. A current cap outside
  them (the spec changed) moves into them at once, with no dwell or hysteresis.
* Acceptance unknown (nothing drafted in the window): the last measured one is used; with none
  yet, the first decision sets the highest cap (optimistic, so that drafting happens and gets
  measured) and later ones hold.
* The first decision (``state.soft_cap`` None) applies at once; ``previous_*`` of that decision
  are the engine's effective caps, so an engine already at the target is not pushed again.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from arctic_operator.api import SpeculationSpec
from arctic_operator.control.cost import DEFAULT_COSTS
from arctic_operator.control.cost import VerifyCostModel as VerifyCostModel
from arctic_operator.control.cost import VerifyCosts as VerifyCosts
from arctic_operator.control.cost import interpolate_log as interpolate_log


@dataclass(frozen=True)
class CapPolicy:
    min_cap: int
    """spec.speculation.capController.min"""
    max_cap: int
    """spec.speculation.capController.max"""
    hard_cap_limit: int | None = None
    """spec.speculation.hardCap: the controller's hard cap never exceeds it."""
    hard_factor: float | None = None
    """Hard cap = soft cap x this (rounded up). None: soft cap + 1, the goodput choice: per step,
    drafting k of b requests changes tokens per step by k x accepted and the step time by
    k x (cost(b) - 1) / b of a step, so drafting some of a batch pays exactly when drafting all of
    it does; above the break-even size nobody should draft."""
    margin: float = 0.1
    """Drafting must gain this fraction over not drafting (tokens per step / step-time ratio >=
    1 + margin) to count as paying. 0.1: the cost model and the acceptance are estimates."""
    hysteresis: float = 0.2
    """Ignore a change smaller than this fraction of the current cap (and smaller than 1)."""
    dwell_s: float = 30.0
    """Seconds between two changes of one pod's cap."""
    max_step_factor: float = 2.0
    """A raise moves the cap at most this factor up (at least by 1); a lowering at most this factor
    down, except that drafting stops at once when it does not pay at all."""
    acceptance_max_age_s: float = 600.0
    """Seconds after which an acceptance that stopped drafting is tested again: the caps let a
    lone request draft (a probe) so that acceptance is measured anew."""
    min_drafts: float = 8
    """Drafts a window must hold for its acceptance to count. A window with fewer (a pod's first
    requests, a trickle of traffic) leaves the last measured acceptance, or none, in place: a
    handful of unlucky drafts must not stop drafting until the next probe."""
    costs: VerifyCosts = DEFAULT_COSTS
    """Verify-cost curves by draft length (the hardware and model the engine runs)."""
    cost_model: VerifyCostModel | None = None
    """One fixed curve instead of ``costs`` at the pod's draft length (tests, the CPU engine)."""
    ttft_budget: float | None = 0.01
    """Fraction: drafting may add at most this to a new request's expected time to first token,
    by the cost model (``ttft_soft_cap``), against not drafting at the batch that not drafting
    would leave. Drafting lengthens every step it is in, and a new
    request waits for the step under way and, in vLLM, for its own prefill step, which verifies the
    others' drafts too; the tokens drafting gains go to the decoding requests only. 0.01: half
    the issue's bar (p95 TTFT within 2 % of never drafting): the budget bounds the mean TTFT by
    the cost model, and longer steps under a queue move the p95 more than the mean (the simulator,
    offline H200 calibration, diurnal seed 2: +3.9 % p95 at a 0.02 budget, +0.8 % at 0.01). None:
    goodput alone. Needs the cost file's decode step times and prefill rate, and the pod's prompt
    tokens per request; without them the soft cap is the break-even size.
    spec.speculation.capController.ttftBudgetPercent / 100."""
    drafts_with_prefill: bool = True
    """Whether the engine verifies drafts in a step that carries prefill chunks (vLLM's
    behaviour): then drafting delays a new request's first token by 1.5 lengthened steps (half
    the step under way, and its prefill step); by half a step when the runtime drops drafts in
    such steps. spec.speculation.draftsInPrefillSteps."""

    refine_costs: bool = True
    """Refine the verify costs of ``costs`` from the pods' own decode steps
    (``refine.refine_costs``; the control loop does it, for this policy and the replica policy).
    spec.speculation.capController.refineCosts."""

    @classmethod
    def from_spec(cls, spec: SpeculationSpec, costs: VerifyCosts = DEFAULT_COSTS) -> CapPolicy:
        return cls(
            min_cap=spec.cap_controller.min,
            max_cap=spec.cap_controller.max,
            hard_cap_limit=spec.hard_cap,
            costs=costs,
            ttft_budget=spec.cap_controller.ttft_budget_percent / 100,
            drafts_with_prefill=spec.drafts_in_prefill_steps,
            refine_costs=spec.cap_controller.refine_costs,
        )

    def bounds(self) -> tuple[int, int]:
        """(lowest, highest) soft cap: [min_cap, max_cap] lowered to hard_cap_limit where above it."""
        high = self.max_cap if self.hard_cap_limit is None else min(self.max_cap, self.hard_cap_limit)
        high = max(0, high)
        return min(self.min_cap, high), high

    def hard_for(self, soft: int, paying: bool = True) -> int:
        """The hard cap that goes with a soft cap: the soft cap itself when drafting does not pay
        (nobody drafts once ``soft`` requests run), else above it."""
        if not (paying and soft):
            hard = soft
        elif self.hard_factor is None:
            hard = soft + 1
        else:
            hard = max(soft, math.ceil(soft * self.hard_factor))
        return hard if self.hard_cap_limit is None else max(soft, min(hard, self.hard_cap_limit))

    def model_for(self, draft_len: float | None) -> VerifyCostModel:
        """The verify-cost curve for drafts of ``draft_len`` tokens on average."""
        return self.cost_model if self.cost_model is not None else self.costs.model_for(draft_len)


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
    draft_len: float | None = None
    """Draft tokens per draft in the window; None when nothing was drafted."""
    prompt_tokens: float | None = None
    """Prompt tokens per request finished in the window; None when none finished."""
    drafts: float | None = None
    """Drafts verified in the window (``accepted_per_draft``'s evidence); None: not counted."""


@dataclass(frozen=True)
class CapState:
    soft_cap: int | None = None
    """Last soft cap the controller set (None: not yet)."""
    hard_cap: int | None = None
    last_change: float | None = None
    last_accepted_per_draft: float | None = None
    """Last measured acceptance, used while nothing is drafted."""
    last_measured: float | None = None
    """When acceptance was last measured (or a probe started)."""
    last_draft_len: float | None = None
    """Last measured draft tokens per draft."""
    last_prompt_tokens: float | None = None
    """Last measured prompt tokens per request."""


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
    """CamelCase: Initial, Optimistic, Probe, Raised, Lowered, NotPaying, OutOfBounds,
    WithinHysteresis, Dwell, AcceptanceUnknown, MetricsIncomplete."""
    message: str
    inputs: dict[str, Any] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return (self.soft_cap, self.hard_cap) != (self.previous_soft_cap, self.previous_hard_cap)


def break_even_batch(
    policy: CapPolicy, accepted_per_draft: float, model: VerifyCostModel | None = None
) -> int:
    """The largest batch size b in [1, max_cap] at which drafting pays:
    ``(1 + accepted_per_draft) / cost(b) >= 1 + margin``; 0 if it does not pay even at 1."""
    gain, need = 1 + accepted_per_draft, 1 + policy.margin
    model = model or policy.model_for(None)

    def pays(batch: int) -> bool:
        return gain / model.cost(batch) >= need

    for batch in range(policy.max_cap, 0, -1):  # the largest: costs need not grow with b
        if pays(batch):
            return batch
    return 0


def undrafted_batch(batch: float, drafting: float, accepted_per_draft: float, extra: float) -> float:
    """The running requests that would carry the same tokens per second without drafting, when
    ``drafting`` of ``batch`` draft: the batch makes ``batch + drafting x accepted_per_draft`` tokens
    per step, in a step ``1 + drafting x extra / batch`` times as long (``extra``: the verify cost
    at ``batch`` less 1); without drafting each running request makes one token a step. At the
    same step time, so a lower bound: the larger batch's step is longer, which needs more."""
    return (batch + drafting * accepted_per_draft) / (1 + drafting * extra / batch)


def ttft_soft_cap(
    policy: CapPolicy,
    model: VerifyCostModel,
    running: float,
    prompt_tokens: float | None,
    accepted_per_draft: float,
) -> int | None:
    """The most of ``running`` requests that may draft within the TTFT budget; None when there is
    no budget, it cannot be priced, or the whole batch may draft. Drafting s of b requests lengthens
    a step by s x (cost(b) - 1) / b, and a new request's first token waits for 1.5 such steps (half
    the step under way and its own prefill step; 0.5 when the runtime drops drafts in prefill
    steps), plus its prefill. The alternative is not drafting at the batch that not drafting would
    leave (``undrafted_batch``: the requests that stop drafting run longer, so more run at once),
    whose steps are longer where the decode step grows with the batch. Drafting s fits when the
    first token with drafting takes at most (1 + budget) x the first token without it, at that
    batch. With a decode step that does not grow with the batch this is the budget at a fixed
    batch: s <= budget x (1.5 + prefill / step) / 1.5 x b / (cost(b) - 1)."""
    costs = policy.costs
    if policy.ttft_budget is None or prompt_tokens is None or costs.prefill_s_per_token is None:
        return None
    batch = max(1.0, running)
    step = costs.decode_step(batch)
    extra = model.cost(batch) - 1
    if step is None or extra <= 0:
        return None
    prefill = prompt_tokens * costs.prefill_s_per_token
    delayed_steps = 1.5 if policy.drafts_with_prefill else 0.5
    allowed = 1 + policy.ttft_budget

    def fits(drafting: float) -> bool:
        undrafted_batch_size = undrafted_batch(batch, drafting, accepted_per_draft, extra)
        undrafted = costs.decode_step(undrafted_batch_size) or step  # measured: step is not None
        with_drafts = 1.5 * step + delayed_steps * step * drafting * extra / batch + prefill
        return with_drafts <= allowed * (1.5 * undrafted + prefill) * (1 + 1e-9)

    if fits(batch):
        return None
    drafting = math.floor(batch)
    while drafting > 0 and not fits(drafting):
        drafting -= 1
    return drafting


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
        "draftLen": None if obs.draft_len is None else round(obs.draft_len, 3),
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

    def apply(
        soft: int,
        reason: str,
        message: str,
        next_state: CapState,
        paying: bool = True,
        hard: int | None = None,
    ) -> tuple[CapDecision, CapState]:
        hard = policy.hard_for(soft, paying) if hard is None else hard
        decision = CapDecision(now, soft, hard, previous_soft, previous_hard, reason, message, inputs)
        return decision, dataclasses.replace(next_state, soft_cap=soft, hard_cap=hard, last_change=now)

    if not obs.complete:
        return hold(
            "MetricsIncomplete", f"Holding the cap ({current}): the pod's metrics are incomplete.", state
        )
    evidence = obs.drafts is None or obs.drafts >= policy.min_drafts
    if obs.accepted_per_draft is not None and evidence:
        state = dataclasses.replace(
            state,
            last_accepted_per_draft=obs.accepted_per_draft,
            last_measured=now,
            last_draft_len=obs.draft_len if obs.draft_len is not None else state.last_draft_len,
        )
    if obs.prompt_tokens is not None:
        state = dataclasses.replace(state, last_prompt_tokens=obs.prompt_tokens)
    accepted = state.last_accepted_per_draft
    in_bounds = state.soft_cap is not None and low <= state.soft_cap <= high
    out_of_bounds = not first and not (
        in_bounds
        and state.soft_cap is not None
        and state.hard_cap
        in {policy.hard_for(state.soft_cap, False)}
        | {policy.hard_for(size) for size in range(state.soft_cap, high + 1)}
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

    model = policy.model_for(state.last_draft_len)
    break_even = break_even_batch(policy, accepted, model)
    pays = break_even > 0
    even = max(low, min(high, break_even))
    budget = ttft_soft_cap(policy, model, obs.running, state.last_prompt_tokens, accepted) if pays else None
    # within the TTFT budget: fewer draft (the soft cap), up to the break-even size (the hard cap);
    # when not even one may draft, nobody does, as when drafting does not pay
    limited = budget is not None and budget < even
    over_budget = budget is not None and budget < 1
    paying = pays and not over_budget
    target = low if over_budget else max(low, min(even, budget)) if budget is not None else even

    def hard_of(soft: int) -> int:
        return policy.hard_for(even if limited else soft)

    inputs.update(
        acceptedPerDraftUsed=round(accepted, 3),
        draftLenUsed=None if state.last_draft_len is None else round(state.last_draft_len, 3),
        breakEvenBatch=break_even,
        costAtRunning=round(model.cost(max(1.0, obs.running)), 3),
        promptTokensUsed=None if state.last_prompt_tokens is None else round(state.last_prompt_tokens, 1),
        ttftBudgetCap=budget,
        target=target,
    )
    why = (
        f"drafting pays up to {break_even} running at {accepted:.2f} accepted per draft"
        if pays
        else f"drafting does not pay even for one request at {accepted:.2f} accepted per draft"
    )
    if over_budget:
        why += (
            f", but not one of {obs.running:.1f} running may draft within the TTFT budget "
            f"({policy.ttft_budget:.0%} at {state.last_prompt_tokens:.0f} prompt tokens)"
        )
    elif limited:
        why += (
            f"; {budget} of {obs.running:.1f} running may draft within the TTFT budget "
            f"({policy.ttft_budget:.0%} at {state.last_prompt_tokens:.0f} prompt tokens)"
        )
    cap = state.soft_cap
    if cap is None or out_of_bounds:
        reason = "Initial" if cap is None else "OutOfBounds"
        hard = hard_of(target) if paying else None
        return apply(target, reason, f"Soft cap {previous_soft} -> {target}: {why}.", state, paying, hard)
    blocked = state.hard_cap is not None and state.hard_cap <= cap  # hard = soft: nobody drafts
    age = None if state.last_measured is None else now - state.last_measured
    stale = age is not None and age > policy.acceptance_max_age_s
    if not paying and blocked and stale and high >= 1:
        probe = max(1, low)
        return apply(
            probe,
            "Probe",
            f"Soft cap {probe}, hard cap {policy.hard_for(probe)}: the acceptance that stopped drafting "
            f"was measured {age:.0f}s ago; a lone request drafts to measure it again.",
            dataclasses.replace(state, last_measured=now),
        )
    if not paying:
        if (cap, state.hard_cap) == (target, policy.hard_for(target, False)):
            return hold("WithinHysteresis", f"Holding soft cap {cap}: {why}.", state)
        return apply(target, "NotPaying", f"Soft cap {cap} -> {target}, nobody drafts: {why}.", state, False)
    threshold = max(1.0, policy.hysteresis * cap)
    if abs(target - cap) < threshold and state.hard_cap == hard_of(cap):
        return hold(
            "WithinHysteresis",
            f"Holding soft cap {cap}: {why}, target {target} is within {threshold:g} of it.",
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
    elif target < cap:
        floor = min(cap - 1, math.ceil(cap / policy.max_step_factor))
        # beyond the TTFT budget drafting costs what it cannot pay back: down at once
        soft, reason = target if limited else max(target, floor), "Lowered"
    else:
        soft, reason = cap, "Raised"  # drafting pays again at the same size: lift the hard cap
    stepped = f" (step limit; target {target})" if soft != target else ""
    return apply(soft, reason, f"Soft cap {cap} -> {soft}{stepped}: {why}.", state, hard=hard_of(soft))
