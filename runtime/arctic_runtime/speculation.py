"""The speculation cap: who may draft in a scheduler step. Pure code, no vLLM import.

Drafting (speculative decoding) pays off when the GPU has spare compute, that is, at small batch
sizes, and wastes compute when the batch is already large. The cap turns drafting off under load:

* ``soft`` (Arctic Inference's ``disable_by_batch_size``): with more than ``soft`` running requests,
  only the first ``soft`` of them (the scheduler's FCFS order) keep their draft tokens.
* ``hard`` (Arctic Inference's ``hard_disable_by_batch_size``): with ``hard`` or more running
  requests, nobody drafts.

``None`` means "no cap" for either. Both can be changed while the server runs
(``PUT /arctic/v1/speculation``).

Beside the cap, ``drafts_in_prefill_steps`` (fixed at engine start, default true as in vLLM): when
false, a step that will carry prefill work drops every running request's drafts (``carries_prefill``
predicts it from the scheduler's queues), so that a new request's first token does not wait for the
verification of the others' drafts. The cap's type and its one validating parser are part of the
runtime/operator contract (``arctic_runtime.contract.SpeculationCap``, ``parse_cap``), so every entry
point (engine arguments, the admin API, the engine-side RPC, the operator) gives the same errors;
this module applies the cap to the scheduler's running requests and counts what it did.

It also times decode-only steps (``decode_step``, ``DecodeStepTimer``) into ``decode_steps`` by
batch bucket and drafting, so that the operator can refine its cost file's verify cost of k-token
drafts from each pod's own steps (those with drafts against those without).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, MutableSequence, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from arctic_runtime.contract import (
    ARCTIC_CAP_ALIASES,
    DECODE_BATCH_BUCKETS,
    STEP_MODES,
    STEP_PHASES,
    DecodeStepTotals,
    SpeculationCap,
    decode_batch_bucket,
)


def split_arctic_keys(speculative_config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a user's ``speculative_config`` into (keys for vLLM, our cap keys renamed).

    vLLM 0.26's SpeculativeConfig rejects unknown keys, so Arctic Inference's
    ``disable_by_batch_size`` / ``hard_disable_by_batch_size`` are taken out before vLLM sees them.
    """
    for_vllm: dict[str, Any] = {}
    ours: dict[str, Any] = {}
    for key, value in speculative_config.items():
        normal = key.replace("-", "_")
        if normal in ARCTIC_CAP_ALIASES:
            ours[ARCTIC_CAP_ALIASES[normal]] = value
        else:
            for_vllm[key] = value
    return for_vllm, ours


class HasDrafts(Protocol):
    """What the cap needs of a running request (vLLM's ``Request`` has it)."""

    spec_token_ids: list[int]


StepMode = Literal["open", "soft_capped", "hard_capped", "prefill"]
StepPhase = Literal["prefill", "decode"]


@dataclass(frozen=True)
class QueueView:
    """What the scheduler holds before a step, as plain numbers (the adapter reads them from vLLM)."""

    running_prefilling: bool
    """A running request is part-way through its prompt (vLLM's ``is_prefill_chunk``): this step
    schedules its next chunk."""
    running_tokens: int
    """Tokens the running requests schedule this step without drafts (1 per decoding request; a
    prefill chunk's tokens, each at most the long-prefill threshold)."""
    slots_taken: int
    """Running requests, plus paused streaming sessions (they hold a slot too)."""
    max_num_seqs: int
    token_budget: int
    """The step's token budget (vLLM's max_num_scheduled_tokens)."""
    waiting: int
    """Requests waiting to be admitted (vLLM's waiting and skipped-waiting queues)."""
    head_tokens_left: int = 0
    """Tokens the first waiting request has left to compute (its prompt, or prompt + output after a
    preemption)."""
    long_prefill_threshold: int = 0
    """vLLM's long_prefill_token_threshold: the most tokens one request schedules per step (0: no
    limit)."""
    block_size: int = 16
    free_kv_blocks: int = 0
    watermark_blocks: int = 0
    """KV blocks vLLM keeps free when it admits a request while others run."""


def admission_blocks(view: QueueView) -> int:
    """KV blocks the first waiting request's first chunk needs at most: its chunk (within the
    budget the running requests leave and the long-prefill threshold) in whole blocks, plus the
    watermark. Prefix-cache hits are not counted (looking them up is vLLM's work, with side effects),
    so this is an upper bound."""
    chunk = min(view.head_tokens_left, max(0, view.token_budget - view.running_tokens))
    if view.long_prefill_threshold > 0:
        chunk = min(chunk, view.long_prefill_threshold)
    watermark = view.watermark_blocks if view.slots_taken > 0 else 0
    return math.ceil(chunk / max(1, view.block_size)) + watermark


def carries_prefill(view: QueueView) -> bool:
    """Whether a step will carry prefill work, predicted before vLLM schedules it (with the running
    requests' drafts dropped). Yes when a running request is mid-prompt; else when a waiting request
    can be admitted: a request slot is free (fewer than max_num_seqs run), the running requests
    leave token budget, and the free KV blocks hold its first chunk (``admission_blocks``). A full
    batch or a KV cache too full to admit anyone means a decode-only step: drafts are kept, since
    dropping them would delay nobody's first token. The KV test leaves out prefix-cache hits, so a
    request that fits only thanks to them is admitted with drafts verified beside it (the
    ``phase_steps`` counters show such steps); the other way round, drafts would be dropped in every
    step while the request waits."""
    if view.running_prefilling:
        return True
    if view.waiting <= 0 or view.slots_taken >= view.max_num_seqs:
        return False
    if view.running_tokens >= view.token_budget or view.head_tokens_left <= 0:
        return False
    return admission_blocks(view) <= view.free_kv_blocks


@dataclass(frozen=True)
class StepOutcome:
    """What the cap did in one scheduler step."""

    mode: StepMode
    drafted: int  # running requests that carry draft tokens into this step
    dropped: int  # running requests whose draft tokens the cap removed


def apply_cap(running: Sequence[HasDrafts], cap: SpeculationCap, *, prefill: bool = False) -> StepOutcome:
    """Remove draft tokens from the requests the cap excludes (in place); report what happened.

    ``running`` is the scheduler's running queue in its own order: the first requests keep their
    drafts under a soft cap, as in Arctic Inference. ``prefill``: the step carries prefill work and
    drafts are not verified in such steps (``drafts_in_prefill_steps`` off): nobody drafts.
    """
    n = len(running)
    slots = 0 if prefill else cap.drafting_slots(n)
    mode: StepMode
    if prefill:
        mode = "prefill"
    elif slots == n:
        mode = "open"
    else:
        mode = "hard_capped" if slots == 0 else "soft_capped"
    dropped = 0
    for request in running[slots:]:
        if request.spec_token_ids:
            request.spec_token_ids = []
            dropped += 1
    drafted = sum(1 for request in running[:slots] if request.spec_token_ids)
    return StepOutcome(mode=mode, drafted=drafted, dropped=dropped)


@dataclass(frozen=True)
class DecodeStep:
    """What a decode-only step scheduled (``decode_step``)."""

    requests: int  # scheduled (decoding) requests, >= 1
    drafting: int  # of them, requests with draft tokens to verify
    draft_tokens: int  # draft tokens verified, summed over the requests


def decode_step(
    requests: int, tokens: int, draft_lengths: Iterable[int], admitted: bool
) -> DecodeStep | None:
    """The step as a ``DecodeStep`` when it was decode-only, else None.

    ``requests``: the scheduled requests (``len(num_scheduled_tokens)``); ``tokens``: the tokens
    they scheduled in all (``total_num_scheduled_tokens``); ``draft_lengths``: the length of each
    request's scheduled draft (``scheduled_spec_decode_tokens``); ``admitted``: a request was newly
    admitted or resumed after a preemption in this step.

    Decode-only: nobody admitted, and every scheduled request scheduled exactly 1 + its own draft
    tokens (no prompt chunk). vLLM schedules a running request at least 1 + its drafts tokens (the
    token sampled last, then the drafts), so that holds for each request exactly when it holds for
    the sum, ``tokens == requests + sum(draft_lengths)``: a few ``len`` calls instead of a pass over
    the batch. An admitted request's placeholder drafts (vLLM pads it with ``-1`` drafts under
    asynchronous scheduling) never count: a step that admits is not decode-only. A running
    request's last prompt chunk of exactly one token looks like a decode token, and costs like one.
    An empty step (nothing scheduled) is not a decode step.
    """
    if admitted or requests <= 0:
        return None
    lengths = list(draft_lengths)
    draft_tokens = sum(lengths)
    if tokens != requests + draft_tokens:
        return None
    return DecodeStep(requests=requests, drafting=len(lengths) - lengths.count(0), draft_tokens=draft_tokens)


@dataclass
class DecodeStepTimer:
    """Times engine steps from the moments their outputs are processed (a monotonic clock).

    A step's time is the interval from the previous step's output to its own: in the engine core's
    loop that is everything the step costs (scheduling, the forward pass and sampling, or under
    asynchronous scheduling the device-bound step with the host work overlapped, and the output's
    bookkeeping; see ``hooks.wrap_update_from_output``). The interval is the step's time only when
    the engine was busy since the previous output (it still had running requests then, so it went
    straight on to the next step instead of waiting for input); after an idle engine it includes
    the wait and is not counted. The first output ever only starts the clock.
    """

    last_output: float | None = None

    def observe(self, now: float, step: DecodeStep | None, busy: bool) -> float | None:
        """The step's seconds when it counts (decode-only, the engine busy since the previous
        output, a previous output seen), else None. Every call restarts the interval at ``now``."""
        last, self.last_output = self.last_output, now
        if step is None or not busy or last is None:
            return None
        return max(0.0, now - last)


def _zero_totals() -> DecodeStepTotals:
    return {"steps": 0, "seconds": 0.0, "requests": 0, "drafting": 0, "draft_tokens": 0}


def _zero_decode_steps() -> dict[str, dict[str, DecodeStepTotals]]:
    return {str(bucket): {"on": _zero_totals(), "off": _zero_totals()} for bucket in DECODE_BATCH_BUCKETS}


@dataclass
class SpeculationCounters:
    """Running totals kept in the EngineCore process and exported as ``arctic_*`` metrics.

    Only steps with at least one running request count, and only with a draft method, except
    ``decode_steps``: decode-step timings count with or without one (all ``off`` without): the plain
    steps are what the operator compares the steps with drafts against.
    """

    steps: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STEP_MODES, 0))
    steps_drafting: int = 0  # steps in which at least one request carried drafts
    steps_not_drafting: int = 0  # steps in which no request carried drafts
    request_steps_drafted: int = 0  # sum over steps of requests that carried drafts
    request_steps_dropped: int = 0  # sum over steps of requests whose drafts the cap removed
    cap_changes: int = 0
    # steps by what vLLM scheduled (prefill work or decode only) and whether drafts were verified
    phase_steps: dict[str, dict[str, int]] = field(
        default_factory=lambda: {phase: {"on": 0, "off": 0} for phase in STEP_PHASES}
    )
    # decode-only steps timed while the engine stayed busy, by batch bucket and drafting on/off:
    # every bucket and state from the start (zeros until seen), so that a consumer's deltas and
    # Prometheus' rate() see each series from its first step on
    decode_steps: dict[str, dict[str, DecodeStepTotals]] = field(default_factory=_zero_decode_steps)

    def record(self, outcome: StepOutcome) -> None:
        self.steps[outcome.mode] += 1
        if outcome.drafted:
            self.steps_drafting += 1
        else:
            self.steps_not_drafting += 1
        self.request_steps_drafted += outcome.drafted
        self.request_steps_dropped += outcome.dropped

    def record_scheduled(self, phase: StepPhase, drafted: bool) -> None:
        """What vLLM scheduled in a step: prefill work or decode only, with drafts verified or not."""
        self.phase_steps[phase]["on" if drafted else "off"] += 1

    def record_decode_step(self, step: DecodeStep, seconds: float) -> None:
        """A timed decode-only step: into its batch bucket, ``on`` when a request verified drafts."""
        totals = self.decode_steps[str(decode_batch_bucket(step.requests))]["on" if step.drafting else "off"]
        totals["steps"] += 1
        totals["seconds"] += seconds
        totals["requests"] += step.requests
        totals["drafting"] += step.drafting
        totals["draft_tokens"] += step.draft_tokens

    def as_dict(self) -> dict[str, Any]:
        return {
            "steps": dict(self.steps),
            "steps_drafting": self.steps_drafting,
            "steps_not_drafting": self.steps_not_drafting,
            "request_steps_drafted": self.request_steps_drafted,
            "request_steps_dropped": self.request_steps_dropped,
            "cap_changes": self.cap_changes,
            "phase_steps": {phase: dict(counts) for phase, counts in self.phase_steps.items()},
            "decode_steps": {
                bucket: {state: DecodeStepTotals(**totals) for state, totals in states.items()}
                for bucket, states in self.decode_steps.items()
            },
        }


def scheduled_phase(
    prefilling_scheduled: bool, admitted_ids: Collection[str], drafted_ids: Iterable[str]
) -> tuple[StepPhase, bool]:
    """What a step scheduled, from vLLM's output: prefill work when a running request's prompt chunk
    was scheduled or a request was admitted (new, or resumed after a preemption); drafts verified
    when a request other than those admitted had draft tokens scheduled (vLLM pads a newly admitted
    request with placeholder drafts in a decode step, which verify nothing)."""
    phase: StepPhase = "prefill" if prefilling_scheduled or admitted_ids else "decode"
    drafted = any(rid not in admitted_ids for rid in drafted_ids)
    return phase, drafted


def empty_drafts(req_ids: MutableSequence[str] | Sequence[str]) -> list[list[int]]:
    """The drafter result that proposes nothing for every request of a batch."""
    return [[] for _ in req_ids]
