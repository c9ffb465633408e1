"""The speculation cap: who may draft in a scheduler step. Pure code, no vLLM import.

Drafting (speculative decoding) pays off when the GPU has spare compute, that is, at small batch
sizes, and wastes compute when the batch is already large. The cap turns drafting off under load:

* ``soft`` (Arctic Inference's ``disable_by_batch_size``): with more than ``soft`` running requests,
  only the first ``soft`` of them (the scheduler's FCFS order) keep their draft tokens.
* ``hard`` (Arctic Inference's ``hard_disable_by_batch_size``): with ``hard`` or more running
  requests, nobody drafts.

``None`` means "no cap" for either. Both can be changed while the server runs
(``PUT /arctic/v1/speculation``); the values are validated here, once, for every entry point
(engine arguments, the admin API and the engine-side RPC), so every path gives the same errors.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableSequence, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

#: The keys a user may write, in ``speculative_config`` (Arctic Inference compatible) or in the
#: admin API / ``additional_config`` (our names). Each maps to a SpeculationCap field.
ARCTIC_COMPAT_KEYS: dict[str, str] = {
    "disable_by_batch_size": "soft_cap",
    "hard_disable_by_batch_size": "hard_cap",
}
CAP_FIELDS = ("soft_cap", "hard_cap")

#: Upper bound for a cap. vLLM's max_num_seqs is far below this; a larger number is a typo.
MAX_CAP = 1_000_000


@dataclass(frozen=True)
class FieldError:
    """One problem with one input field, worded for the person who wrote the value."""

    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


class InvalidSetting(ValueError):
    """Raised with every problem found in one input (not just the first)."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in self.errors))


@dataclass(frozen=True)
class SpeculationCap:
    """Batch-size caps on drafting. ``None`` = no cap."""

    soft_cap: int | None = None
    hard_cap: int | None = None

    def drafting_slots(self, num_running: int) -> int:
        """How many of the first ``num_running`` running requests may keep their drafts."""
        if self.hard_cap is not None and num_running >= self.hard_cap:
            return 0
        if self.soft_cap is not None and num_running > self.soft_cap:
            return self.soft_cap
        return num_running

    def as_dict(self) -> dict[str, int | None]:
        return {"soft_cap": self.soft_cap, "hard_cap": self.hard_cap}


def _check_cap_value(name: str, value: Any, errors: list[FieldError]) -> int | None:
    if value is None:
        return None
    # bool is an int subclass in Python; "true" is not a batch size.
    if isinstance(value, bool) or not isinstance(value, int):
        errors.append(FieldError(name, f"must be a whole number >= 0 or null, got {value!r}"))
        return None
    if value < 0:
        errors.append(FieldError(name, f"must be >= 0 (0 turns drafting off), got {value}"))
        return None
    if value > MAX_CAP:
        errors.append(FieldError(name, f"must be <= {MAX_CAP}, got {value}"))
        return None
    return value


def parse_cap(
    data: Mapping[str, Any], *, base: SpeculationCap | None = None, prefix: str = ""
) -> SpeculationCap:
    """Validate ``{"soft_cap": int|None, "hard_cap": int|None}`` into a SpeculationCap.

    With ``base``, absent fields keep their value from ``base`` (a partial update); without it,
    absent fields are ``None``. Unknown keys are errors (a misspelt key must not be ignored).
    Raises InvalidSetting naming every bad field (with ``prefix`` before each name).
    """
    errors: list[FieldError] = []
    if not isinstance(data, Mapping):
        raise InvalidSetting([FieldError(prefix or "body", "must be a JSON object")])
    for key in data:
        if key not in CAP_FIELDS:
            allowed = ", ".join(CAP_FIELDS)
            errors.append(FieldError(f"{prefix}{key}", f"unknown field; allowed fields: {allowed}"))
    start = base or SpeculationCap()
    values: dict[str, int | None] = {}
    for name in CAP_FIELDS:
        values[name] = (
            _check_cap_value(f"{prefix}{name}", data[name], errors) if name in data else getattr(start, name)
        )
    soft, hard = values["soft_cap"], values["hard_cap"]
    if not errors and soft is not None and hard is not None and hard < soft:
        errors.append(
            FieldError(
                f"{prefix}hard_cap",
                f"must be >= soft_cap (got hard_cap={hard}, soft_cap={soft}); "
                "the hard cap turns drafting off for everyone, so it cannot be below the soft cap",
            )
        )
    if errors:
        raise InvalidSetting(errors)
    return SpeculationCap(soft_cap=soft, hard_cap=hard)


def split_arctic_keys(speculative_config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a user's ``speculative_config`` into (keys for vLLM, our cap keys renamed).

    vLLM 0.26's SpeculativeConfig rejects unknown keys, so Arctic Inference's
    ``disable_by_batch_size`` / ``hard_disable_by_batch_size`` are taken out before vLLM sees them.
    """
    for_vllm: dict[str, Any] = {}
    ours: dict[str, Any] = {}
    for key, value in speculative_config.items():
        normal = key.replace("-", "_")
        if normal in ARCTIC_COMPAT_KEYS:
            ours[ARCTIC_COMPAT_KEYS[normal]] = value
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
