"""The contract between the runtime plugin and the operator: every fact both sides rely on, once.

Pure code, standard library only: the operator image imports this module without torch, vLLM or
kopf, and the runtime imports it in every vLLM process. A name, bound, path or default that the
runtime and the operator must agree on is defined here and nowhere else; both sides import it.

What lives here:

* **Process environment**: the variables that enable the plugin and carry the admin token, and the
  names vLLM's ``VLLM_PLUGINS`` allowlist must hold.
* **Engine settings**: our section of vLLM's ``additional_config`` (key ``"arctic"``), as typed
  dataclasses with one validating parser each (``EngineSettings``, ``SpeculationCap``,
  ``ParallelSettings``). The operator builds an ``EngineSettings`` from the custom resource and
  passes ``--additional-config``; the plugin parses the same dict in every process. Arctic
  Inference's spellings (``disable_by_batch_size``, ``--ulysses-sequence-parallel-size``, ...) are
  accepted only at the vLLM boundary (``ARCTIC_CAP_ALIASES``, ``ARCTIC_PARALLEL_FLAGS``) and folded
  into this section there.
* **vLLM's speculative-config**: the keys and defaults our launchers write (``speculative_config``).
* **Admin API**: its port (its own listener, apart from vLLM's serving port), paths, and the shape
  of its answers.
* **Metrics**: every ``arctic_*`` series name the runtime exports and the operator reads.

Validation errors are ``InvalidSetting`` holding one ``FieldError`` per bad field, each naming the
field as the user wrote it and what is allowed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Process environment
# --------------------------------------------------------------------------------------------

#: Set to 1/true/yes/on to enable the plugin. Unset (the default), the installed plugin is inert:
#: vLLM behaves exactly as without it. (Arctic Inference uses the same opt-in model.)
ENV_ENABLED = "ARCTIC_SERVE_ENABLED"
#: The admin API's bearer token, given directly ...
ENV_ADMIN_TOKEN = "ARCTIC_SERVE_ADMIN_TOKEN"
#: ... or as a file path (a mounted Kubernetes Secret). The file is re-read on every request, so a
#: rotated Secret takes effect without a restart.
ENV_ADMIN_TOKEN_FILE = "ARCTIC_SERVE_ADMIN_TOKEN_FILE"
#: Our ``vllm.general_plugins`` entry point (patches vLLM in every process).
GENERAL_PLUGIN = "arctic_serve"
#: Our ``vllm.endpoint_plugins`` entry point (admin API and metrics on the OpenAI server). vLLM loads
#: endpoint plugins only when they are named in ``VLLM_PLUGINS``.
ADMIN_PLUGIN = "arctic_serve_admin"
#: What ``VLLM_PLUGINS`` must hold for the whole runtime to load.
VLLM_PLUGIN_NAMES = (GENERAL_PLUGIN, ADMIN_PLUGIN)


def vllm_plugins_value(current: str | None = None) -> str:
    """``VLLM_PLUGINS`` with our plugins added to whatever the user already allowlisted."""
    names = [n for n in (current or "").split(",") if n]
    return ",".join([*names, *(n for n in VLLM_PLUGIN_NAMES if n not in names)])


# --------------------------------------------------------------------------------------------
# Engine settings: additional_config["arctic"]
# --------------------------------------------------------------------------------------------

#: The key of our section in vLLM's ``additional_config`` (shipped by vLLM to every process).
ADDITIONAL_CONFIG_KEY = "arctic"


def _is_int(value: Any) -> bool:
    # bool is an int subclass in Python; "true" is not a count.
    return isinstance(value, int) and not isinstance(value, bool)


def _object(data: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise InvalidSetting([FieldError(where or "body", "must be a JSON object")])
    return data


def _unknown_keys(data: Mapping[str, Any], allowed: Sequence[str], prefix: str) -> list[FieldError]:
    return [
        FieldError(f"{prefix}{key}", f"unknown field; allowed fields: {', '.join(allowed)}")
        for key in data
        if key not in allowed
    ]


# --- the speculation cap ----------------------------------------------------------------------

#: Upper bound for a cap. vLLM's max_num_seqs is far below this; a larger number is a typo.
MAX_CAP = 1_000_000
#: The cap's fields, as written in the admin API and in ``additional_config``.
CAP_FIELDS = ("soft_cap", "hard_cap")
#: Arctic Inference's names for the caps inside ``speculative_config`` -> ours. Accepted only at
#: the vLLM boundary (``--speculative-config``); everything we write uses ours.
ARCTIC_CAP_ALIASES: dict[str, str] = {
    "disable_by_batch_size": "soft_cap",
    "hard_disable_by_batch_size": "hard_cap",
}


@dataclass(frozen=True)
class SpeculationCap:
    """Batch-size caps on drafting (speculative decoding). ``None`` = no cap.

    ``soft_cap`` (Arctic Inference's ``disable_by_batch_size``): with more than N running requests,
    only the first N (the scheduler's order) keep their drafts. ``hard_cap``
    (``hard_disable_by_batch_size``): with N or more running requests, nobody drafts.
    """

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


#: Our ``speculation`` section's switch (beside the cap): whether steps that carry prefill work
#: verify the running requests' drafts (true, vLLM's behaviour) or drop them (false).
DRAFTS_IN_PREFILL_STEPS = "drafts_in_prefill_steps"
#: Every field of the ``speculation`` section of ``additional_config["arctic"]``: the live cap's
#: fields and the engine-start switch (not part of the admin API's cap).
SPECULATION_FIELDS = (*CAP_FIELDS, DRAFTS_IN_PREFILL_STEPS)


def _check_cap_value(name: str, value: Any, errors: list[FieldError]) -> int | None:
    if value is None:
        return None
    if not _is_int(value):
        errors.append(FieldError(name, f"must be a whole number >= 0 or null, got {value!r}"))
        return None
    if value < 0:
        errors.append(FieldError(name, f"must be >= 0 (0 turns drafting off), got {value}"))
        return None
    if value > MAX_CAP:
        errors.append(FieldError(name, f"must be <= {MAX_CAP}, got {value}"))
        return None
    return int(value)


def parse_cap(
    data: Mapping[str, Any], *, base: SpeculationCap | None = None, prefix: str = ""
) -> SpeculationCap:
    """Validate ``{"soft_cap": int|None, "hard_cap": int|None}`` into a SpeculationCap.

    With ``base``, absent fields keep their value from ``base`` (a partial update); without it,
    absent fields are ``None``. Unknown keys are errors (a misspelt key must not be ignored).
    Raises InvalidSetting naming every bad field (with ``prefix`` before each name).
    """
    data = _object(data, prefix.rstrip("."))
    errors = _unknown_keys(data, CAP_FIELDS, prefix)
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


def parse_speculation_section(data: Any, *, prefix: str = "") -> tuple[SpeculationCap, bool]:
    """Our ``speculation`` section: (the cap, ``drafts_in_prefill_steps``). The cap's fields go
    through ``parse_cap``; ``drafts_in_prefill_steps`` must be a JSON boolean (default true)."""
    data = _object(data, prefix.rstrip("."))
    errors = _unknown_keys(data, SPECULATION_FIELDS, prefix)
    in_prefill = data.get(DRAFTS_IN_PREFILL_STEPS, True)
    if not isinstance(in_prefill, bool):
        errors.append(
            FieldError(f"{prefix}{DRAFTS_IN_PREFILL_STEPS}", f"must be true or false, got {in_prefill!r}")
        )
        in_prefill = True
    cap = SpeculationCap()
    try:
        cap = parse_cap({k: v for k, v in data.items() if k in CAP_FIELDS}, prefix=prefix)
    except InvalidSetting as exc:
        errors += exc.errors
    if errors:
        raise InvalidSetting(errors)
    return cap, in_prefill


# --- parallelism ------------------------------------------------------------------------------

#: Largest Ulysses sequence-parallel size we accept (GPUs per engine beyond this are not a pod).
MAX_ULYSSES = 64
#: Largest shift threshold (tokens per step); far above any max_num_batched_tokens in use.
MAX_SHIFT_THRESHOLD = 1 << 20
#: Arctic Inference's default threshold: decode-heavy steps stay below it, prefill chunks go above.
DEFAULT_SHIFT_THRESHOLD = 512
#: Arctic Inference's command-line flags -> our ``parallel`` fields. Its launch commands keep
#: working: the plugin adds these flags to vLLM's parser and folds them into our section.
ARCTIC_PARALLEL_FLAGS: dict[str, str] = {
    "--ulysses-sequence-parallel-size": "ulysses",
    "--enable-shift-parallel": "shift",
    "--shift-parallel-threshold": "shift_threshold",
}
PARALLEL_FIELDS = ("tensor", "ulysses", "shift", "shift_threshold")

ParallelMode = Literal["tp", "sp"]
#: The two modes of a Shift Parallelism step, as metric labels: ``tp`` = full tensor parallelism
#: over all TP x SP GPUs (the shift model), ``sp`` = Ulysses sequence parallelism x TP.
PARALLEL_MODES: tuple[ParallelMode, ...] = ("tp", "sp")


@dataclass(frozen=True)
class ParallelSettings:
    """How one engine spreads over its GPUs beyond vLLM's own tensor parallelism.

    vLLM runs ``tensor x ulysses`` ranks. With ``ulysses > 1`` every step runs Ulysses sequence
    parallelism: each group of ``ulysses`` ranks splits the step's tokens, weights are sharded
    ``tensor`` ways (replicated over the Ulysses group), and attention exchanges heads by
    all-to-all. With ``shift`` a second copy of the weights sharded over all ``tensor x ulysses``
    ranks serves small steps in full tensor parallelism, sharing the KV cache.
    """

    ulysses: int = 1
    """Ulysses sequence-parallel size (Arctic Inference's ``--ulysses-sequence-parallel-size``).
    1 = off. Range 1..64."""
    shift: bool = False
    """Shift Parallelism (``--enable-shift-parallel``): steps with at most ``shift_threshold``
    scheduled tokens run in full tensor parallelism over all ranks, larger ones in Ulysses x tensor.
    Needs ``ulysses > 1``. Costs a second copy of the weights at 1/(tensor x ulysses) per GPU."""
    shift_threshold: int = DEFAULT_SHIFT_THRESHOLD
    """Tokens scheduled in a step (prefill chunks + decode tokens + draft tokens to verify) at or
    below which a step runs in full tensor parallelism (``--shift-parallel-threshold``). 512 is
    Arctic Inference's default: a decode batch of 128 requests with 3 draft tokens stays in
    tensor mode, a long prefill chunk goes to sequence parallelism. Range 1..2^20."""
    tensor: int | None = None
    """The tensor-parallel size of the Ulysses model (vLLM's ``--tensor-parallel-size`` as given).
    Recorded by the plugin when it widens vLLM's own tensor parallelism to ``tensor x ulysses``
    ranks; users leave it unset."""

    @property
    def enabled(self) -> bool:
        return self.ulysses > 1

    def world_size(self, tensor: int) -> int:
        """Ranks of one engine for a tensor-parallel size: tensor x ulysses."""
        return tensor * self.ulysses

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ulysses": self.ulysses,
            "shift": self.shift,
            "shift_threshold": self.shift_threshold,
        }
        if self.tensor is not None:
            out["tensor"] = self.tensor
        return out


def parse_parallel(data: Mapping[str, Any], *, prefix: str = "") -> ParallelSettings:
    """Validate our ``parallel`` section (absent fields take their defaults)."""
    data = _object(data, prefix.rstrip("."))
    errors = _unknown_keys(data, PARALLEL_FIELDS, prefix)
    ulysses = data.get("ulysses", 1)
    if not _is_int(ulysses) or not 1 <= ulysses <= MAX_ULYSSES:
        errors.append(
            FieldError(f"{prefix}ulysses", f"must be a whole number in 1..{MAX_ULYSSES}, got {ulysses!r}")
        )
        ulysses = 1
    shift = data.get("shift", False)
    if not isinstance(shift, bool):
        errors.append(FieldError(f"{prefix}shift", f"must be true or false, got {shift!r}"))
        shift = False
    threshold = data.get("shift_threshold", DEFAULT_SHIFT_THRESHOLD)
    if not _is_int(threshold) or not 1 <= threshold <= MAX_SHIFT_THRESHOLD:
        errors.append(
            FieldError(
                f"{prefix}shift_threshold",
                f"must be a whole number of tokens in 1..{MAX_SHIFT_THRESHOLD}, got {threshold!r}",
            )
        )
        threshold = DEFAULT_SHIFT_THRESHOLD
    tensor = data.get("tensor")
    if tensor is not None and (not _is_int(tensor) or tensor < 1):
        errors.append(FieldError(f"{prefix}tensor", f"must be a whole number >= 1, got {tensor!r}"))
        tensor = None
    if shift and ulysses == 1 and not errors:
        errors.append(
            FieldError(
                f"{prefix}shift",
                "Shift Parallelism needs ulysses > 1 (--ulysses-sequence-parallel-size): it switches "
                "between Ulysses x tensor and full tensor parallelism over the same GPUs",
            )
        )
    if errors:
        raise InvalidSetting(errors)
    return ParallelSettings(ulysses=ulysses, shift=shift, shift_threshold=threshold, tensor=tensor)


def shift_mode(scheduled_tokens: int, settings: ParallelSettings) -> ParallelMode:
    """The mode of one step: full tensor parallelism (``tp``) for a step of at most the threshold's
    scheduled tokens when shift is on, Ulysses x tensor (``sp``) otherwise."""
    if settings.shift and scheduled_tokens <= settings.shift_threshold:
        return "tp"
    return "sp"


# --- draft heads ------------------------------------------------------------------------------

#: ``speculative_config.method`` values served by our draft-head proposer (Arctic's names).
HEAD_METHODS = ("arctic", "mlp_speculator")
HEAD_FIELDS = ("model", "method", "num_speculative_tokens", "hybrid", "hybrid_threshold")


@dataclass(frozen=True)
class HeadSettings:
    """A draft head (Arctic's MLP/LSTM speculator) and whether suffix decoding runs beside it.

    ``hybrid``: per request and step, the suffix draft is used when its score (expected accepted
    tokens) is at least ``hybrid_threshold`` (default 1.0, chosen by measurement; the head's
    ``n_predict`` is Arctic's rule), continued by the head when shorter than the head's draft
    length, else the head's draft. The front end writes this section from ``speculative_config``."""

    model: str
    method: str = "arctic"
    num_speculative_tokens: int = 1
    hybrid: bool = False
    hybrid_threshold: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "method": self.method,
            "num_speculative_tokens": self.num_speculative_tokens,
            "hybrid": self.hybrid,
            "hybrid_threshold": self.hybrid_threshold,
        }


def parse_heads(data: Mapping[str, Any], *, prefix: str = "") -> HeadSettings:
    data = _object(data, prefix.rstrip("."))
    errors = _unknown_keys(data, HEAD_FIELDS, prefix)
    model = data.get("model")
    if not isinstance(model, str) or not model:
        errors.append(FieldError(f"{prefix}model", f"must be the speculator's folder, got {model!r}"))
    method = data.get("method", "arctic")
    if method not in HEAD_METHODS:
        errors.append(
            FieldError(f"{prefix}method", f"must be one of {', '.join(HEAD_METHODS)}, got {method!r}")
        )
    k = data.get("num_speculative_tokens", 1)
    if not _is_int(k) or k < 1:
        errors.append(
            FieldError(f"{prefix}num_speculative_tokens", f"must be a whole number >= 1, got {k!r}")
        )
    hybrid = data.get("hybrid", False)
    if not isinstance(hybrid, bool):
        errors.append(FieldError(f"{prefix}hybrid", f"must be true or false, got {hybrid!r}"))
    threshold = data.get("hybrid_threshold")
    if threshold is not None and (
        isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or threshold < 0
    ):
        errors.append(FieldError(f"{prefix}hybrid_threshold", f"must be a number >= 0, got {threshold!r}"))
    if errors:
        raise InvalidSetting(errors)
    return HeadSettings(
        model=str(model),
        method=str(method),
        num_speculative_tokens=int(k),
        hybrid=bool(hybrid),
        hybrid_threshold=None if threshold is None else float(threshold),
    )


# --- the whole section ------------------------------------------------------------------------

ENGINE_SECTIONS = ("speculation", "parallel", "swiftkv", "heads")


@dataclass(frozen=True)
class EngineSettings:
    """Our section of vLLM's ``additional_config`` (``{"arctic": {...}}``), every field typed."""

    speculation: SpeculationCap = field(default_factory=SpeculationCap)
    parallel: ParallelSettings = field(default_factory=ParallelSettings)
    swiftkv: bool = False
    """Serve with SwiftKV (``{"swiftkv": {"enabled": true}}``): the model must be a SwiftKV checkpoint
    (``model_type: llama_swiftkv``), checked at engine start. A SwiftKV checkpoint is served with
    SwiftKV whether or not this is set; the flag makes a wrong model fail instead of running plain."""
    heads: HeadSettings | None = None
    swiftkv_min_saving_tokens: int = 0
    """SwiftKV's prefill saving runs in a step only when it skips at least this many later-layer rows
    (``{"swiftkv": {"min_saving_tokens": N}}``); smaller steps run the compiled model over every row.
    0 = the default, ``DEFAULT_SWIFTKV_MIN_SAVING_TOKENS``."""
    drafts_in_prefill_steps: bool = True
    """Whether a scheduler step that carries prefill work (a running request's next prompt chunk, or
    a waiting request the step can admit) verifies the running requests' drafts
    (``{"speculation": {"drafts_in_prefill_steps": false}}``). True: vLLM's behaviour. False: those
    steps drop every draft, so a new request's first token waits for no verify work; the decoding
    requests lose one step of drafting per prefill step. Fixed at engine start."""

    def section(self) -> dict[str, Any]:
        """The section's dict; parts left at their defaults are omitted (shorter command lines)."""
        out: dict[str, Any] = {}
        if self.speculation != SpeculationCap():
            out["speculation"] = self.speculation.as_dict()
        if not self.drafts_in_prefill_steps:
            out.setdefault("speculation", {})[DRAFTS_IN_PREFILL_STEPS] = False
        if self.parallel != ParallelSettings():
            out["parallel"] = self.parallel.as_dict()
        if self.swiftkv or self.swiftkv_min_saving_tokens:
            out["swiftkv"] = {"enabled": self.swiftkv}
            if self.swiftkv_min_saving_tokens:
                out["swiftkv"]["min_saving_tokens"] = self.swiftkv_min_saving_tokens
        if self.heads is not None:
            out["heads"] = self.heads.as_dict()
        return out

    def to_additional_config(self) -> dict[str, Any]:
        """``{"arctic": section}``, the value of vLLM's ``--additional-config``."""
        return {ADDITIONAL_CONFIG_KEY: self.section()}


def parse_engine_settings(additional_config: Mapping[str, Any] | None) -> EngineSettings:
    """Read and validate our section of vLLM's ``additional_config`` (absent = defaults)."""
    section = (additional_config or {}).get(ADDITIONAL_CONFIG_KEY)
    if section is None:
        return EngineSettings()
    prefix = f"additional_config.{ADDITIONAL_CONFIG_KEY}"
    section = _object(section, prefix)
    errors = [
        FieldError(f"{prefix}.{key}", f"unknown section; allowed: {', '.join(ENGINE_SECTIONS)}")
        for key in section
        if key not in ENGINE_SECTIONS
    ]
    if errors:
        raise InvalidSetting(errors)
    found: list[FieldError] = []
    cap, parallel, in_prefill = SpeculationCap(), ParallelSettings(), True
    try:
        cap, in_prefill = parse_speculation_section(
            section.get("speculation") or {}, prefix=f"{prefix}.speculation."
        )
    except InvalidSetting as exc:
        found += exc.errors
    try:
        parallel = parse_parallel(section.get("parallel") or {}, prefix=f"{prefix}.parallel.")
    except InvalidSetting as exc:
        found += exc.errors
    swiftkv, min_saving = False, 0
    if "swiftkv" in section:
        try:
            swiftkv, min_saving = parse_swiftkv(section["swiftkv"], prefix=f"{prefix}.swiftkv.")
        except InvalidSetting as exc:
            found += exc.errors
    heads = None
    if section.get("heads") is not None:
        try:
            heads = parse_heads(section["heads"], prefix=f"{prefix}.heads.")
        except InvalidSetting as exc:
            found += exc.errors
    if found:
        raise InvalidSetting(found)
    return EngineSettings(
        speculation=cap,
        parallel=parallel,
        swiftkv=swiftkv,
        heads=heads,
        swiftkv_min_saving_tokens=min_saving,
        drafts_in_prefill_steps=in_prefill,
    )


#: SwiftKV's saving path runs uncompiled and without CUDA graphs, so small steps pay its launch cost:
#: on the H200 (8B shape, dummy weights, swiftkv-8b-20261203T111317Z, saving path in every step) a
#: 512-token prompt's TTFT was 40.8 ms against vanilla's 16.7 ms (vanilla replays a CUDA graph up to
#: 512 tokens), 1k 24.9 vs 28.1 ms, 2k 32.1 vs 51.4 ms, 8k 132.9 vs 214.3 ms. So the saving path runs
#: only in steps that skip at least this many rows: every measured loss stays out (512), the 1k gain
#: (0.89x) is given up.
DEFAULT_SWIFTKV_MIN_SAVING_TOKENS = 1024
_SWIFTKV_KEYS = ("enabled", "min_saving_tokens")


def parse_swiftkv(data: Any, *, prefix: str = "") -> tuple[bool, int]:
    """``{"enabled": bool, "min_saving_tokens": int >= 1}`` -> (enabled, min_saving_tokens or 0 for
    the default); anything else is an error naming the key."""
    where = prefix.rstrip(".")
    if not isinstance(data, Mapping):
        raise InvalidSetting([FieldError(where, f'must be an object like {{"enabled": true}}, got {data!r}')])
    errors = [
        FieldError(f"{prefix}{k}", f"unknown key; allowed: {', '.join(_SWIFTKV_KEYS)}")
        for k in data
        if k not in _SWIFTKV_KEYS
    ]
    enabled = data.get("enabled", False)
    if not isinstance(enabled, bool):
        errors.append(FieldError(f"{prefix}enabled", f"must be true or false, got {enabled!r}"))
    minimum = data.get("min_saving_tokens", 0)
    if minimum != 0 and (isinstance(minimum, bool) or not isinstance(minimum, int) or minimum < 1):
        errors.append(FieldError(f"{prefix}min_saving_tokens", f"must be an integer >= 1, got {minimum!r}"))
    if errors:
        raise InvalidSetting(errors)
    return bool(enabled), int(minimum)


# --------------------------------------------------------------------------------------------
# vLLM's speculative_config, as our launchers write it
# --------------------------------------------------------------------------------------------

SpeculationMethod = Literal["ngram", "suffix"]
#: Draft tokens when none are given: 3 for n-gram (vLLM's own examples); suffix decoding:
#: ``default_suffix_spec_tokens`` of the tree depth.
DEFAULT_NGRAM_SPEC_TOKENS = 3
#: Suffix decoding's longest default draft: long copies are what it is good at, and 16 keeps the
#: verify batch small.
DEFAULT_SUFFIX_MAX_SPEC_TOKENS = 16
#: n-gram lookup window: match 2..4 tokens of the context (vLLM's defaults for prompt lookup).
NGRAM_LOOKUP = {"prompt_lookup_max": 4, "prompt_lookup_min": 2}
#: Suffix decoding's tree depth when none is given: a 48-token match plus a 16-token draft.
DEFAULT_SUFFIX_TREE_DEPTH = 64


def default_suffix_spec_tokens(max_tree_depth: int) -> int:
    """Suffix decoding's draft cap for a tree depth when none is given: half the trie for the match,
    half for the draft, at most 16 tokens and at least 1. (vLLM would default to the tree depth,
    which leaves no room to match.)"""
    return max(1, min(DEFAULT_SUFFIX_MAX_SPEC_TOKENS, max_tree_depth // 2))


@dataclass(frozen=True)
class SuffixKeys:
    """vLLM's suffix-decoding keys (``suffix_decoding_*``), as our launchers set them."""

    max_tree_depth: int = DEFAULT_SUFFIX_TREE_DEPTH
    max_cached_requests: int | None = None
    max_spec_factor: float | None = None
    min_token_prob: float | None = None


def speculative_config(
    method: str, num_speculative_tokens: int | None = None, suffix: SuffixKeys | None = None
) -> dict[str, Any] | None:
    """vLLM's ``--speculative-config`` for a draft method (None for ``"none"``). The speculation
    cap is not part of it: it travels in our section of ``additional_config``."""
    if method == "none":
        return None
    config: dict[str, Any] = {"method": method, "num_speculative_tokens": num_speculative_tokens}
    if method == "ngram":
        config["num_speculative_tokens"] = num_speculative_tokens or DEFAULT_NGRAM_SPEC_TOKENS
        config.update(NGRAM_LOOKUP)
    elif method == "suffix":
        keys = suffix or SuffixKeys()
        config["num_speculative_tokens"] = num_speculative_tokens or default_suffix_spec_tokens(
            keys.max_tree_depth
        )
        config["suffix_decoding_max_tree_depth"] = keys.max_tree_depth
        optional = {
            "suffix_decoding_max_cached_requests": keys.max_cached_requests,
            "suffix_decoding_max_spec_factor": keys.max_spec_factor,
            "suffix_decoding_min_token_prob": keys.min_token_prob,
        }
        config.update({k: v for k, v in optional.items() if v is not None})
    return config


# --------------------------------------------------------------------------------------------
# Admin API
# --------------------------------------------------------------------------------------------

#: Every admin route lives under this prefix, on the admin listener (not on vLLM's serving port).
ADMIN_PREFIX = "/arctic/v1"
#: The admin API's own TCP port. The API server process opens it beside vLLM's serving port, on the
#: same host, so a Service can publish the serving port while the admin API stays reachable only
#: pod-to-pod (and a NetworkPolicy can admit just the operator to it). ``ENV_ADMIN_PORT`` changes it.
ARCTIC_ADMIN_PORT = 8001
#: Overrides ``ARCTIC_ADMIN_PORT`` (``arctic-serve serve --admin-port`` sets it; the operator's pod
#: template sets it to the port it declares).
ENV_ADMIN_PORT = "ARCTIC_SERVE_ADMIN_PORT"
#: The name of the admin port on the engine container (the serving port is ``"http"``).
ADMIN_PORT_NAME = "admin"
#: GET the speculation cap and counters; PUT replaces the cap, PATCH changes the fields given.
SPECULATION_PATH = f"{ADMIN_PREFIX}/speculation"
#: GET the parallel layout (TP, SP, shift, threshold), the mode mix and the weights per GPU.
PARALLEL_PATH = f"{ADMIN_PREFIX}/parallel"


#: What a scheduler step allowed (``SpeculationCountersView.steps``): every running request could
#: draft; only the first soft cap; nobody (hard cap); nobody because the step carries prefill work
#: and ``drafts_in_prefill_steps`` is off.
STEP_MODES = ("open", "soft_capped", "hard_capped", "prefill")
#: What a step scheduled (``SpeculationCountersView.phase_steps``): prefill work (a prompt chunk, a
#: newly admitted or resumed request) or decode work only.
STEP_PHASES = ("prefill", "decode")


#: Batch-size buckets of the decode-step timings (``SpeculationCountersView.decode_steps``, the
#: ``arctic_decode_step*`` series' ``batch`` label): a step of n decoding requests counts in the
#: first bucket >= n, a larger one in the last. Powers of two: a GPU's step time grows about with
#: log(batch), so each bucket spans about the same change of step time.
DECODE_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


def decode_batch_bucket(requests: int) -> int:
    """The ``DECODE_BATCH_BUCKETS`` bucket of a decode step with ``requests`` (>= 1) requests."""
    for bucket in DECODE_BATCH_BUCKETS:
        if requests <= bucket:
            return bucket
    return DECODE_BATCH_BUCKETS[-1]


class DecodeStepTotals(TypedDict):
    """Running totals over the decode-only steps of one batch bucket and drafting state, each
    timed from the end of the previous step to its own end while the engine stayed busy."""

    steps: int
    seconds: float
    """Sum of the steps' wall times (scheduling, the forward pass, sampling, bookkeeping)."""
    requests: int
    """Sum over the steps of their decoding requests (mean batch = requests / steps)."""
    drafting: int
    """Sum over the steps of the requests that had draft tokens verified."""
    draft_tokens: int
    """Sum over the steps of the draft tokens verified."""


class SpeculationCountersView(TypedDict):
    steps: dict[str, int]
    steps_drafting: int
    steps_not_drafting: int
    request_steps_drafted: int
    request_steps_dropped: int
    cap_changes: int
    phase_steps: dict[str, dict[str, int]]
    """Steps by what vLLM scheduled (``STEP_PHASES``) and whether drafts were verified in them
    (``"on"``/``"off"``), read from the scheduler's output."""
    decode_steps: dict[str, dict[str, DecodeStepTotals]]
    """Decode-only steps by batch bucket (``DECODE_BATCH_BUCKETS``, as a string) and whether drafts
    were verified in them (``"on"``/``"off"``): their count and wall time, for the operator to refine
    the cost file's verify costs from the pod's own steps (with drafts against without)."""


class SpeculationView(TypedDict):
    """The body of ``GET``/``PUT``/``PATCH`` on ``SPECULATION_PATH``."""

    soft_cap: int | None
    hard_cap: int | None
    method: str | None
    num_speculative_tokens: int
    drafts_in_prefill_steps: bool
    counters: SpeculationCountersView
    engine_core: dict[str, Any] | None
    workers: list[dict[str, Any]]


class ParallelView(TypedDict):
    """The body of ``GET`` on ``PARALLEL_PATH``."""

    tensor: int
    ulysses: int
    shift: bool
    shift_threshold: int | None
    last_mode: ParallelMode | None
    steps: dict[str, int]
    tokens: dict[str, int]
    draft_steps: dict[str, int]
    workers: list[dict[str, Any]]


# --------------------------------------------------------------------------------------------
# Metrics (Prometheus names; counters without the ``_total`` suffix the exposition adds)
# --------------------------------------------------------------------------------------------

METRIC_PLUGIN_INFO = "arctic_plugin_info"
METRIC_STATE_TIMESTAMP = "arctic_state_timestamp_seconds"
METRIC_SOFT_CAP = "arctic_speculation_soft_cap"
METRIC_HARD_CAP = "arctic_speculation_hard_cap"
METRIC_SPECULATION_STEPS = "arctic_speculation_steps"
METRIC_DRAFTING_STEPS = "arctic_speculation_drafting_steps"
METRIC_REQUEST_STEPS = "arctic_speculation_request_steps"
METRIC_CAP_CHANGES = "arctic_speculation_cap_changes"
METRIC_PHASE_STEPS = "arctic_speculation_phase_steps"
#: Decode-only steps by ``batch`` bucket and ``drafting`` (on/off): their count, wall seconds,
#: decoding requests, requests with drafts verified and draft tokens verified (``DecodeStepTotals``).
METRIC_DECODE_STEPS = "arctic_decode_steps"
METRIC_DECODE_STEP_SECONDS = "arctic_decode_step_seconds"
METRIC_DECODE_STEP_REQUESTS = "arctic_decode_step_requests"
METRIC_DECODE_STEP_DRAFTING = "arctic_decode_step_drafting_requests"
METRIC_DECODE_STEP_DRAFT_TOKENS = "arctic_decode_step_draft_tokens"
#: ``DecodeStepTotals`` key -> its series name.
DECODE_STEP_METRICS: dict[str, str] = {
    "steps": METRIC_DECODE_STEPS,
    "seconds": METRIC_DECODE_STEP_SECONDS,
    "requests": METRIC_DECODE_STEP_REQUESTS,
    "drafting": METRIC_DECODE_STEP_DRAFTING,
    "draft_tokens": METRIC_DECODE_STEP_DRAFT_TOKENS,
}
METRIC_PARALLEL_INFO = "arctic_parallel_info"
METRIC_PARALLEL_STEPS = "arctic_parallel_steps"
METRIC_PARALLEL_TOKENS = "arctic_parallel_tokens"
METRIC_SHIFT_THRESHOLD = "arctic_parallel_shift_threshold_tokens"
