"""The speculation cap: who may draft in a scheduler step. Pure code, no vLLM import.

Drafting (speculative decoding) pays off when the GPU has spare compute, that is, at small batch
sizes, and wastes compute when the batch is already large. The cap turns drafting off under load:

* ``soft`` (Arctic Inference's ``disable_by_batch_size``): with more than ``soft`` running requests,
  only the first ``soft`` of them (the scheduler's FCFS order) keep their draft tokens.
* ``hard`` (Arctic Inference's ``hard_disable_by_batch_size``): with ``hard`` or more running
  requests, nobody drafts.

``None`` means "no cap" for either. Both can be changed while the server runs
(``PUT /arctic/v1/speculation``). The cap's type and its one validating parser are part of the
runtime/operator contract (``arctic_runtime.contract.SpeculationCap``, ``parse_cap``), so every entry
point (engine arguments, the admin API, the engine-side RPC, the operator) gives the same errors;
this module applies the cap to the scheduler's running requests and counts what it did.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableSequence, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from arctic_runtime.contract import ARCTIC_CAP_ALIASES, SpeculationCap


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


StepMode = Literal["open", "soft_capped", "hard_capped"]


@dataclass(frozen=True)
class StepOutcome:
    """What the cap did in one scheduler step."""

    mode: StepMode
    drafted: int  # running requests that carry draft tokens into this step
    dropped: int  # running requests whose draft tokens the cap removed


def apply_cap(running: Sequence[HasDrafts], cap: SpeculationCap) -> StepOutcome:
    """Remove draft tokens from the requests the cap excludes (in place); report what happened.

    ``running`` is the scheduler's running queue in its own order: the first requests keep their
    drafts under a soft cap, as in Arctic Inference.
    """
    n = len(running)
    slots = cap.drafting_slots(n)
    mode: StepMode = "open" if slots == n else ("hard_capped" if slots == 0 else "soft_capped")
    dropped = 0
    for request in running[slots:]:
        if request.spec_token_ids:
            request.spec_token_ids = []
            dropped += 1
    drafted = sum(1 for request in running[:slots] if request.spec_token_ids)
    return StepOutcome(mode=mode, drafted=drafted, dropped=dropped)


@dataclass
class SpeculationCounters:
    """Running totals kept in the EngineCore process and exported as ``arctic_*`` metrics.

    Only steps with at least one running request count.
    """

    steps: dict[str, int] = field(default_factory=lambda: {"open": 0, "soft_capped": 0, "hard_capped": 0})
    steps_drafting: int = 0  # steps in which at least one request carried drafts
    steps_not_drafting: int = 0  # steps in which no request carried drafts
    request_steps_drafted: int = 0  # sum over steps of requests that carried drafts
    request_steps_dropped: int = 0  # sum over steps of requests whose drafts the cap removed
    cap_changes: int = 0

    def record(self, outcome: StepOutcome) -> None:
        self.steps[outcome.mode] += 1
        if outcome.drafted:
            self.steps_drafting += 1
        else:
            self.steps_not_drafting += 1
        self.request_steps_drafted += outcome.drafted
        self.request_steps_dropped += outcome.dropped

    def as_dict(self) -> dict[str, Any]:
        return {
            "steps": dict(self.steps),
            "steps_drafting": self.steps_drafting,
            "steps_not_drafting": self.steps_not_drafting,
            "request_steps_drafted": self.request_steps_drafted,
            "request_steps_dropped": self.request_steps_dropped,
            "cap_changes": self.cap_changes,
        }


def empty_drafts(req_ids: MutableSequence[str] | Sequence[str]) -> list[list[int]]:
    """The drafter result that proposes nothing for every request of a batch."""
    return [[] for _ in req_ids]
