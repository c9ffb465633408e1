"""Validation of an ArcticInferenceService: the same rules as the CRD's, in Python.

Two layers, as in the API server:

1. **Structure** (types, enums, bounds, required fields, patterns): the pydantic models in
   ``api.py``, from which the CRD's openAPIV3Schema is generated.
2. **Cross-field rules** (exactly one model source, tensor x ulysses = GPUs per pod, hard cap >= soft
   cap, ...): ``RULES`` below. Each rule is written twice, once as a CEL expression that
   ``crd.py`` puts into the schema as ``x-kubernetes-validations`` (the API server rejects an
   invalid object with the rule's message) and once as a Python check over the parsed spec (the
   operator reports a Degraded condition and an event with the same message, for objects that
   reached it some other way: an old CRD, a disabled validation). Both carry one message, naming
   the field and what is allowed; tests evaluate the CEL with a real CEL implementation on the same
   objects and check that both agree.

``validate(obj)`` returns every problem found (not just the first), each naming the field by its
JSON path, e.g. ``spec.speculation.hardCap: must be >= spec.speculation.softCap (got 2 < 4)``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from arctic_operator.api import (
    GPU_RESOURCE,
    LABEL_VALUE,
    MANAGED_ENGINE_FLAGS,
    QUALIFIED_NAME,
    ArcticInferenceService,
    ArcticInferenceServiceSpec,
    ModelSource,
)
from arctic_operator.engine_args import managed_spellings


@dataclass(frozen=True)
class FieldError:
    """One problem with one field: ``field`` is its JSON path (``spec.parallelism.tensor``),
    ``message`` says what is allowed (the CRD's CEL message for cross-field rules, word for word),
    ``detail`` what was found (``got 3 x 2 = 6, gpusPerPod 8``), empty when there is nothing to
    add."""

    field: str
    message: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" + (f" ({self.detail})" if self.detail else "")


class InvalidResource(ValueError):
    """Raised by ``parse`` with every problem found."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(str(e) for e in self.errors))


Reason = Literal["FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired"]
#: A rule's Python side: ``None`` when the spec satisfies the rule, else what was found ("" for
#: nothing to add).
Check = Callable[[ArcticInferenceServiceSpec], str | None]


@dataclass(frozen=True)
class Rule:
    """A cross-field rule, in CEL for the CRD and in Python for the operator."""

    name: str
    """Stable id (tests use it)."""
    at: str
    """JSON path of the schema node that carries the rule; CEL's ``self`` is the value there, after
    the API server has applied the schema's defaults."""
    field: str
    """JSON path of the field the message names (the error's ``fieldPath``)."""
    cel: str
    """The CEL expression; true means valid."""
    message: str
    """What is allowed, without the field name (the CRD message is ``field: message``)."""
    check: Check
    """The same rule in Python, over the parsed (defaulted) spec."""
    reason: Reason = "FieldValueInvalid"
    """The API server's error type for a violation."""

    @property
    def cel_message(self) -> str:
        return f"{self.field}: {self.message}"

    @property
    def field_path(self) -> str | None:
        """``field`` relative to ``at`` (``.hardCap``), or None when the rule names its own node."""
        if self.field == self.at:
            return None
        if not self.field.startswith(self.at + "."):
            raise ValueError(f"rule {self.name}: field {self.field} is not under {self.at}")
        return self.field[len(self.at) :]


# --------------------------------------------------------------------------------------------
# Python checks
# --------------------------------------------------------------------------------------------


def _source_kinds(source: ModelSource) -> list[str]:
    """The sources set, by their names in the API (camelCase)."""
    names = {"hub": "hub", "pvc": "pvc", "uri": "uri", "image_path": "imagePath"}
    return [api for name, api in names.items() if getattr(source, name) is not None]


def _exactly_one_source(source: ModelSource | None) -> str | None:
    if source is None:
        return None
    kinds = _source_kinds(source)
    if len(kinds) == 1:
        return None
    return "got none" if not kinds else "got " + " and ".join(kinds)


def _revision_needs_hub(source: ModelSource | None, revision: str | None) -> str | None:
    if source is None or revision is None or source.hub is not None:
        return None
    kinds = _source_kinds(source)
    return f"got source {' and '.join(kinds)}" if kinds else "got no source"


def _model_source(spec: ArcticInferenceServiceSpec) -> str | None:
    return _exactly_one_source(spec.model.source)


def _model_revision(spec: ArcticInferenceServiceSpec) -> str | None:
    return _revision_needs_hub(spec.model.source, spec.model.revision)


def _draft_source(spec: ArcticInferenceServiceSpec) -> str | None:
    draft = spec.speculation.draft_model
    return None if draft is None else _exactly_one_source(draft.source)


def _draft_revision(spec: ArcticInferenceServiceSpec) -> str | None:
    draft = spec.speculation.draft_model
    return None if draft is None else _revision_needs_hub(draft.source, draft.revision)


def _replicas_xor_autoscaling(spec: ArcticInferenceServiceSpec) -> str | None:
    if spec.replicas is not None and spec.autoscaling is not None:
        return f"got replicas {spec.replicas} and autoscaling"
    return None


def _autoscaling_bounds(spec: ArcticInferenceServiceSpec) -> str | None:
    auto = spec.autoscaling
    if auto is not None and auto.min_replicas > auto.max_replicas:
        return f"got {auto.min_replicas} > {auto.max_replicas}"
    return None


def _parallel_size(spec: ArcticInferenceServiceSpec) -> str | None:
    tensor, ulysses = spec.parallelism.tensor, spec.parallelism.ulysses
    wanted = spec.gpus_per_pod if spec.gpus_per_pod > 0 else 1
    if tensor * ulysses == wanted:
        return None
    return f"got tensor {tensor} x ulysses {ulysses} = {tensor * ulysses}, gpusPerPod {spec.gpus_per_pod}"


def _shift_needs_ulysses(spec: ArcticInferenceServiceSpec) -> str | None:
    if spec.parallelism.shift_parallel.enabled and spec.parallelism.ulysses <= 1:
        return f"got ulysses {spec.parallelism.ulysses}"
    return None


def _hard_cap_at_least_soft_cap(spec: ArcticInferenceServiceSpec) -> str | None:
    soft, hard = spec.speculation.soft_cap, spec.speculation.hard_cap
    if soft is not None and hard is not None and hard < soft:
        return f"got {hard} < {soft}"
    return None


def _cap_bounds(spec: ArcticInferenceServiceSpec) -> str | None:
    bounds = spec.speculation.cap_controller
    if bounds.min > bounds.max:
        return f"got {bounds.min} > {bounds.max}"
    return None


def _draft_required(spec: ArcticInferenceServiceSpec) -> str | None:
    if spec.speculation.method == "arctic" and spec.speculation.draft_model is None:
        return ""
    return None


def _draft_only_for_arctic(spec: ArcticInferenceServiceSpec) -> str | None:
    if spec.speculation.method != "arctic" and spec.speculation.draft_model is not None:
        return f"got method {spec.speculation.method}"
    return None


def _suffix_tokens_below_depth(spec: ArcticInferenceServiceSpec) -> str | None:
    speculation = spec.speculation
    tokens, depth = speculation.num_speculative_tokens, speculation.suffix.max_tree_depth
    if speculation.method == "suffix" and tokens is not None and tokens >= depth:
        return f"got {tokens} >= {depth}"
    return None


def _no_gpu_in_resources(spec: ArcticInferenceServiceSpec) -> str | None:
    if spec.resources is None:
        return None
    found = [
        name
        for name, values in (("requests", spec.resources.requests), ("limits", spec.resources.limits))
        if values is not None and GPU_RESOURCE in values
    ]
    return f"got {GPU_RESOURCE} in {' and '.join(found)}" if found else None


def _managed_flag(arg: str) -> bool:
    return any(arg == flag or arg.startswith(flag + "=") for flag in _MANAGED_FLAG_SPELLINGS)


def _no_managed_flags(spec: ArcticInferenceServiceSpec) -> str | None:
    bad = [arg for arg in spec.extra_args or [] if _managed_flag(arg)]
    return "got " + ", ".join(bad) if bad else None


def _one_monitor(spec: ArcticInferenceServiceSpec) -> str | None:
    mon = spec.monitoring
    if mon.service_monitor.enabled and mon.pod_monitor.enabled:
        return ""
    return None


#: Every spelling of a managed flag vLLM accepts: with dashes and with underscores.
_MANAGED_FLAG_SPELLINGS: tuple[str, ...] = tuple(
    dict.fromkeys(
        spelling
        for flag in MANAGED_ENGINE_FLAGS
        for spelling in (flag, "--" + flag[2:].replace("-", "_") if flag.startswith("--") else flag)
    )
)


_QUALIFIED = re.compile(QUALIFIED_NAME)
_LABEL_VALUE = re.compile(LABEL_VALUE)


def _bad_keys(mapping: Mapping[str, Any] | None, values: bool = False) -> str | None:
    """The first key (or, with ``values``, label value) Kubernetes would reject, as a detail."""
    for key, value in (mapping or {}).items():
        if not _QUALIFIED.match(key):
            return f"got key {key!r}"
        if values and not _LABEL_VALUE.match(str(value)):
            return f"got value {value!r} for {key!r}"
    return None


def _node_selector(spec: ArcticInferenceServiceSpec) -> str | None:
    return _bad_keys(spec.scheduling.node_selector if spec.scheduling else None, values=True)


def _monitor_labels(spec: ArcticInferenceServiceSpec) -> str | None:
    return _bad_keys(spec.monitoring.labels, values=True)


def _service_annotations(spec: ArcticInferenceServiceSpec) -> str | None:
    return _bad_keys(spec.service.annotations)


def _resource_names(spec: ArcticInferenceServiceSpec) -> str | None:
    r = spec.resources
    return None if r is None else _bad_keys(r.requests) or _bad_keys(r.limits)


def _tolerations(spec: ArcticInferenceServiceSpec) -> str | None:
    for i, t in enumerate((spec.scheduling.tolerations if spec.scheduling else None) or []):
        exists = t.operator == "Exists"
        if exists and t.value:
            return f"tolerations[{i}]: value {t.value!r} with operator Exists"
        if not t.key and not exists:
            return f"tolerations[{i}]: no key with operator {t.operator or 'Equal'}"
        if t.toleration_seconds is not None and t.effect != "NoExecute":
            return f"tolerations[{i}]: tolerationSeconds with effect {t.effect or '(all)'}"
    return None


def _env_one_source(spec: ArcticInferenceServiceSpec) -> str | None:
    for e in spec.env or []:
        if e.value and e.value_from is not None:
            return f"got both for {e.name}"
    return None


def _cel_keys(map_expr: str, values: bool = False) -> str:
    check = f"k.matches('{QUALIFIED_NAME}')"
    if values:
        check += f" && {map_expr}[k].matches('{LABEL_VALUE}')"
    return f"{map_expr}.all(k, {check})"


# --------------------------------------------------------------------------------------------
# The rules
# --------------------------------------------------------------------------------------------

_ONE_SOURCE_CEL = (
    "(has(self.hub) ? 1 : 0) + (has(self.pvc) ? 1 : 0) + (has(self.uri) ? 1 : 0)"
    " + (has(self.imagePath) ? 1 : 0) == 1"
)
_FLAGS_CEL_LIST = "[" + ", ".join(f"'{flag}'" for flag in _MANAGED_FLAG_SPELLINGS) + "]"
_SHOWN_FLAGS = ", ".join(MANAGED_ENGINE_FLAGS)

RULES: tuple[Rule, ...] = (
    Rule(
        name="model-source-exactly-one",
        at="spec.model.source",
        field="spec.model.source",
        cel=_ONE_SOURCE_CEL,
        message="must set exactly one of hub, pvc, uri or imagePath",
        check=_model_source,
    ),
    Rule(
        name="model-revision-needs-hub",
        at="spec.model",
        field="spec.model.revision",
        cel="!has(self.revision) || has(self.source.hub)",
        message="may be set only with spec.model.source.hub (a Hub branch, tag or commit)",
        check=_model_revision,
        reason="FieldValueForbidden",
    ),
    Rule(
        name="replicas-xor-autoscaling",
        at="spec",
        field="spec.replicas",
        cel="!(has(self.replicas) && has(self.autoscaling))",
        message=(
            "must not be set together with spec.autoscaling: with autoscaling the operator owns the "
            "replica count (remove one of them; for HPA or KEDA keep replicas)"
        ),
        check=_replicas_xor_autoscaling,
        reason="FieldValueForbidden",
    ),
    Rule(
        name="autoscaling-min-le-max",
        at="spec.autoscaling",
        field="spec.autoscaling.minReplicas",
        cel="self.minReplicas <= self.maxReplicas",
        message="must be <= spec.autoscaling.maxReplicas",
        check=_autoscaling_bounds,
    ),
    Rule(
        name="parallel-size-equals-gpus",
        at="spec",
        field="spec.parallelism",
        cel=(
            "self.parallelism.tensor * self.parallelism.ulysses == "
            "(self.gpusPerPod == 0 ? 1 : self.gpusPerPod)"
        ),
        message=(
            "tensor x ulysses must equal spec.gpusPerPod (1 when gpusPerPod is 0: a CPU pod runs "
            "one engine process)"
        ),
        check=_parallel_size,
    ),
    Rule(
        name="shift-parallel-needs-ulysses",
        at="spec.parallelism",
        field="spec.parallelism.shiftParallel.enabled",
        cel="!self.shiftParallel.enabled || self.ulysses > 1",
        message=(
            "may be true only with spec.parallelism.ulysses > 1 (shift parallelism switches between "
            "ulysses x tensor and full tensor parallelism)"
        ),
        check=_shift_needs_ulysses,
        reason="FieldValueForbidden",
    ),
    Rule(
        name="hard-cap-ge-soft-cap",
        at="spec.speculation",
        field="spec.speculation.hardCap",
        cel="!has(self.softCap) || !has(self.hardCap) || self.hardCap >= self.softCap",
        message="must be >= spec.speculation.softCap",
        check=_hard_cap_at_least_soft_cap,
    ),
    Rule(
        name="cap-controller-min-le-max",
        at="spec.speculation.capController",
        field="spec.speculation.capController.min",
        cel="self.min <= self.max",
        message="must be <= spec.speculation.capController.max",
        check=_cap_bounds,
    ),
    Rule(
        name="draft-model-required-for-arctic",
        at="spec.speculation",
        field="spec.speculation.draftModel",
        cel="self.method != 'arctic' || has(self.draftModel)",
        message="is required when spec.speculation.method is arctic (the speculator's MLP or LSTM heads)",
        check=_draft_required,
        reason="FieldValueRequired",
    ),
    Rule(
        name="draft-model-only-for-arctic",
        at="spec.speculation",
        field="spec.speculation.draftModel",
        cel="self.method == 'arctic' || !has(self.draftModel)",
        message="may be set only when spec.speculation.method is arctic",
        check=_draft_only_for_arctic,
        reason="FieldValueForbidden",
    ),
    Rule(
        name="draft-model-source-exactly-one",
        at="spec.speculation.draftModel.source",
        field="spec.speculation.draftModel.source",
        cel=_ONE_SOURCE_CEL,
        message="must set exactly one of hub, pvc, uri or imagePath",
        check=_draft_source,
    ),
    Rule(
        name="draft-model-revision-needs-hub",
        at="spec.speculation.draftModel",
        field="spec.speculation.draftModel.revision",
        cel="!has(self.revision) || has(self.source.hub)",
        message="may be set only with spec.speculation.draftModel.source.hub (a Hub branch, tag or commit)",
        check=_draft_revision,
        reason="FieldValueForbidden",
    ),
    Rule(
        name="suffix-tokens-below-tree-depth",
        at="spec.speculation",
        field="spec.speculation.numSpeculativeTokens",
        cel=(
            "self.method != 'suffix' || !has(self.numSpeculativeTokens) || "
            "self.numSpeculativeTokens < self.suffix.maxTreeDepth"
        ),
        message=(
            "must be < spec.speculation.suffix.maxTreeDepth when method is suffix (the trie holds the "
            "matched context plus the draft)"
        ),
        check=_suffix_tokens_below_depth,
    ),
    Rule(
        name="no-gpu-in-resources",
        at="spec.resources",
        field="spec.resources",
        cel=(
            f"(!has(self.requests) || !('{GPU_RESOURCE}' in self.requests)) && "
            f"(!has(self.limits) || !('{GPU_RESOURCE}' in self.limits))"
        ),
        message=f"must not set {GPU_RESOURCE} in requests or limits: set spec.gpusPerPod instead",
        check=_no_gpu_in_resources,
        reason="FieldValueForbidden",
    ),
    Rule(
        name="extra-args-not-managed",
        at="spec.extraArgs",
        field="spec.extraArgs",
        cel=f"self.all(a, !{_FLAGS_CEL_LIST}.exists(f, a == f || a.startsWith(f + '=')))",
        message=f"must not repeat flags the operator sets from the spec ({_SHOWN_FLAGS}); use the spec",
        check=_no_managed_flags,
        reason="FieldValueForbidden",
    ),
    Rule(
        name="node-selector-labels",
        at="spec.scheduling",
        field="spec.scheduling.nodeSelector",
        cel="!has(self.nodeSelector) || " + _cel_keys("self.nodeSelector", values=True),
        message="keys must be label keys ([prefix/]name, name <= 63 characters, alphanumeric at both "
        "ends) and values label values (<= 63 characters, alphanumeric at both ends, or empty)",
        check=_node_selector,
    ),
    Rule(
        name="tolerations-as-kubernetes-allows",
        at="spec.scheduling",
        field="spec.scheduling.tolerations",
        cel=(
            "!has(self.tolerations) || self.tolerations.all(t, "
            "(!has(t.operator) || t.operator != 'Exists' || !has(t.value) || t.value == '') && "
            "((has(t.key) && t.key != '') || (has(t.operator) && t.operator == 'Exists')) && "
            "(!has(t.tolerationSeconds) || (has(t.effect) && t.effect == 'NoExecute')))"
        ),
        message="each toleration: no value with operator Exists; no key only with operator Exists; "
        "tolerationSeconds only with effect NoExecute",
        check=_tolerations,
    ),
    Rule(
        name="resource-names",
        at="spec.resources",
        field="spec.resources",
        cel="(!has(self.requests) || "
        + _cel_keys("self.requests")
        + ") && (!has(self.limits) || "
        + _cel_keys("self.limits")
        + ")",
        message="resource names must be qualified names such as cpu, memory or example.com/device",
        check=_resource_names,
    ),
    Rule(
        name="env-value-or-value-from",
        at="spec",
        field="spec.env",
        cel="!has(self.env) || self.env.all(e, !has(e.valueFrom) || !has(e.value) || e.value == '')",
        message="each entry sets value or valueFrom, not both",
        check=_env_one_source,
        reason="FieldValueForbidden",
    ),
    Rule(
        name="service-annotation-keys",
        at="spec.service",
        field="spec.service.annotations",
        cel="!has(self.annotations) || " + _cel_keys("self.annotations"),
        message="keys must be annotation keys ([prefix/]name, name <= 63 characters, alphanumeric at "
        "both ends)",
        check=_service_annotations,
    ),
    Rule(
        name="monitoring-labels",
        at="spec.monitoring",
        field="spec.monitoring.labels",
        cel="!has(self.labels) || " + _cel_keys("self.labels", values=True),
        message="keys must be label keys and values label values (<= 63 characters, alphanumeric at "
        "both ends, or empty)",
        check=_monitor_labels,
    ),
    Rule(
        name="one-prometheus-monitor",
        at="spec.monitoring",
        field="spec.monitoring",
        cel="!(self.serviceMonitor.enabled && self.podMonitor.enabled)",
        message="must not enable both serviceMonitor and podMonitor: each scrapes every replica (pick one)",
        check=_one_monitor,
        reason="FieldValueForbidden",
    ),
)


def check_rules(spec: ArcticInferenceServiceSpec) -> list[FieldError]:
    """The cross-field rules that ``spec`` (already structurally valid) breaks."""
    errors = []
    for rule in RULES:
        detail = rule.check(spec)
        if detail is not None:
            errors.append(FieldError(rule.field, rule.message, detail))
    return errors


# --------------------------------------------------------------------------------------------
# Structural errors (pydantic) worded like the rules
# --------------------------------------------------------------------------------------------

_REWORD = (
    ("Input should be ", "must be "),
    ("String should have at most ", "must have at most "),
    ("String should have at least ", "must have at least "),
    ("String should match pattern ", "must match "),
    ("List should have at most ", "must have at most "),
    ("List should have at least ", "must have at least "),
    ("Value error, ", ""),
)


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(root)"


def _from_pydantic(error: ErrorDetails) -> FieldError:
    field = _path(tuple(error["loc"]))
    kind = error["type"]
    if kind == "missing":
        return FieldError(field, "is required")
    if kind == "extra_forbidden":
        return FieldError(field, "is not a field here (misspelt?)")
    message = error["msg"]
    for old, new in _REWORD:
        if message.startswith(old):
            message = new + message[len(old) :]
            break
    value = error.get("input")
    shown = repr(value)
    detail = "" if isinstance(value, dict | list) or " got " in message else f"got {shown[:80]}"
    return FieldError(field, message, detail)


def _checked(obj: Mapping[str, Any]) -> tuple[ArcticInferenceService | None, list[FieldError]]:
    # Strict JSON validation, as the API server checks types: "3" is not an integer, 1 not a
    # boolean (pydantic's default lax mode would convert both); RFC 3339 strings are timestamps.
    try:
        resource = ArcticInferenceService.model_validate_json(json.dumps(obj, default=str), strict=True)
    except ValidationError as exc:
        return None, [_from_pydantic(error) for error in exc.errors()]
    errors = check_rules(resource.spec)
    if not any(e.field == "spec.extraArgs" for e in errors):
        hidden = managed_spellings(resource.spec.extra_args or [])
        if hidden:
            errors.append(
                FieldError("spec.extraArgs", EXTRA_ARGS_AS_VLLM_READS_THEM, "got " + ", ".join(hidden))
            )
    return resource, errors


#: Beyond the CRD's rule: spellings vLLM's parser reads as a managed flag (engine_args).
EXTRA_ARGS_AS_VLLM_READS_THEM = (
    "must not set, in any spelling vLLM accepts (abbreviation, _ for -, dotted key, --config file), "
    "the flags the operator sets from the spec; use the spec"
)


def validate(obj: Mapping[str, Any]) -> list[FieldError]:
    """Every problem with ``obj`` (an ArcticInferenceService as a JSON object: a kopf body, a parsed
    YAML file): structural problems first; cross-field rules only when the structure is valid
    (the rules read typed, defaulted values). An empty list: valid."""
    return _checked(obj)[1]


def parse(obj: Mapping[str, Any]) -> ArcticInferenceService:
    """The typed, defaulted resource; raises InvalidResource naming every problem."""
    resource, errors = _checked(obj)
    if resource is None or errors:
        raise InvalidResource(errors)
    return resource
