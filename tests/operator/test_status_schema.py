"""The status the operator writes is the typed model's, and the generated CRD keeps all of it.

The worked examples in test_status.py, test_reconcile.py and test_control_io.py check every status
they produce with ``assert_typed_status``; here: the check itself (a key the CRD lacks, a wrong
type, a missing required field, a value outside an enum each fail it), a status with every field
the model has (the CRD knows them all), and the merge patches that carry the status to the API
server (nulls only where a key must go).
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from arctic_operator.api import (
    ArcticInferenceServiceStatus,
    AutoscalingStatus,
    CapChangeRecord,
    CapControllerStatus,
    Condition,
    EngineStatus,
    PodControlStatus,
    ReplicaDecisionRecord,
)
from arctic_operator.control.kube import status_patch
from arctic_operator.plan import Plan, PlanError, labels
from arctic_operator.status import compute_status, reconcile_status_patch
from arctic_runtime.contract import MAX_CAP
from tests.operator.apiserver_rules import structural_errors
from tests.operator.status_checks import STATUS_SCHEMA, assert_typed_status, typed_status_problems

T0 = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
T1 = datetime(2026, 11, 25, 12, 5, 0, tzinfo=UTC)


def example(
    *, engine: EngineStatus | None = None, invalid: bool = False, previous: dict[str, Any] | None = None
) -> dict[str, Any]:
    return compute_status(
        name="llama",
        namespace="ml",
        generation=3,
        now=T1 if previous else T0,
        previous=previous,
        errors=None,
        plan=None if invalid else Plan(replicas=2, selector=labels("llama")),
        workload={"replicas": 2, "readyReplicas": 2, "updatedReplicas": 2},
        service_port=8000,
        engine=engine,
    )


def full_status() -> dict[str, Any]:
    """A status with every field of the model set (lists with one item)."""
    status = ArcticInferenceServiceStatus(
        observed_generation=4,
        conditions=[
            Condition(
                type="Ready",
                status="True",
                reason="ReplicasReady",
                message="2 of 2 replicas ready",
                last_transition_time=T0,
                observed_generation=4,
            )
        ],
        replicas=2,
        ready_replicas=2,
        updated_replicas=2,
        selector="app.kubernetes.io/instance=llama",
        endpoint="http://llama.ml.svc:8000/v1",
        engine=EngineStatus(
            speculation_method="suffix", num_speculative_tokens=8, soft_cap=16, hard_cap=32, swift_kv=True
        ),
        autoscaling=AutoscalingStatus(
            desired_replicas=3,
            current_replicas=2,
            reason="ScaleUp",
            message="6 waiting on 2 replicas",
            metrics_complete=True,
            ready_pods=2,
            observed_pods=2,
            loading_pods=0,
            waiting_requests=6.0,
            running_requests=12.5,
            kv_cache_usage=0.42,
            last_scale_time=T0,
            last_decisions=[
                ReplicaDecisionRecord(time=T0, current=2, desired=3, reason="ScaleUp", message="6 waiting")
            ],
        ),
        cap_controller=CapControllerStatus(
            last_changes=[
                CapChangeRecord(
                    time=T0,
                    pod="llama-0",
                    soft_cap=10,
                    hard_cap=11,
                    previous_soft_cap=16,
                    previous_hard_cap=MAX_CAP,
                    reason="Lowered",
                    message="drafting pays up to 10 running",
                    result="Ok",
                )
            ]
        ),
        pods=[
            PodControlStatus(
                name="llama-0",
                ready=True,
                metrics="Error",
                metrics_error="timeout",
                running=4.0,
                waiting=1.0,
                kv_cache_usage=0.3,
                acceptance_rate=0.5,
                configured_soft_cap=10,
                configured_hard_cap=11,
                effective_soft_cap=10,
                effective_hard_cap=11,
                cap_reason="Dwell",
                cap_message="held",
                cap_error="401 Unauthorized",
            )
        ],
    )
    dumped = status.dump()
    assert all(value is not None for value in status.model_dump().values())
    return dumped


def test_every_field_of_the_model_is_kept_by_the_crd() -> None:
    assert assert_typed_status(full_status())["engine"]["swiftKV"] is True


def test_compute_status_is_the_typed_model_and_the_crd_keeps_it() -> None:
    s = example(engine=EngineStatus(speculation_method="arctic", soft_cap=8, hard_cap=9, swift_kv=False))
    assert typed_status_problems(s) == []
    assert s["engine"] == {"speculationMethod": "arctic", "softCap": 8, "hardCap": 9, "swiftKV": False}
    assert s["conditions"][0] == {
        "type": "Ready",
        "status": "True",
        "reason": "ReplicasReady",
        "message": "2 of 2 replicas ready",
        "lastTransitionTime": "2026-11-25T12:00:00Z",
        "observedGeneration": 3,
    }
    # an engine section with nothing set is left out, not written as {}
    assert "engine" not in example(engine=EngineStatus())


def test_times_are_whole_utc_seconds_and_an_unreadable_previous_time_is_replaced() -> None:
    s = compute_status(
        name="llama",
        namespace="ml",
        generation=1,
        now=datetime(2026, 11, 25, 13, 0, 0, 999_999),  # naive: taken as UTC
        previous={"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "yesterday"}]},
        errors=None,
        plan=Plan(replicas=1, selector=labels("llama")),
        workload={"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1},
        service_port=8000,
    )
    assert {c["lastTransitionTime"] for c in assert_typed_status(s)["conditions"]} == {"2026-11-25T13:00:00Z"}


@pytest.mark.parametrize(
    ("change", "crd_problem"),
    [
        (lambda s: s.update(bogus=1), "status.bogus: unknown field"),
        (lambda s: s["engine"].update(draftModel="x"), "status.engine.draftModel: unknown field"),
        (lambda s: s["pods"][0].update(extra=True), "status.pods[0].extra: unknown field"),
        (lambda s: s["conditions"][0].update(severity="x"), "status.conditions[0].severity: unknown field"),
        (lambda s: s.update(replicas="2"), "status.replicas: '2' is not an integer"),
        (lambda s: s.update(replicas=2.0), "status.replicas: 2.0 is not an integer"),
        (lambda s: s.update(readyReplicas=True), "status.readyReplicas: True is not an integer"),
        # the models know neither int32 nor list-map keys (only the CRD checks them): CRD only
        (lambda s: s.update(updatedReplicas=2**31), "status.updatedReplicas: 2147483648 outside"),
        (lambda s: s.update(selector=None), "status.selector: null"),
        (lambda s: s["conditions"][0].pop("reason"), "status.conditions[0]: required reason missing"),
        (lambda s: s["conditions"][0].update(type="Healthy"), "status.conditions[0].type: 'Healthy' is not"),
        (lambda s: s["conditions"][0].update(lastTransitionTime="noon"), "is not an RFC 3339 date-time"),
        (lambda s: s["pods"].append(dict(s["pods"][0])), "status.pods: duplicate keys ['name']"),
        (lambda s: s["pods"][0].update(metrics="Fine"), "status.pods[0].metrics: 'Fine' is not one of"),
        (lambda s: s["autoscaling"].update(waitingRequests=-1.0), "status.autoscaling.waitingRequests: -1.0"),
        (lambda s: s["engine"].update(swiftKV="yes"), "status.engine.swiftKV: 'yes' is not a boolean"),
        (lambda s: s.update(engine=[]), "status.engine: list where an object is expected"),
    ],
)
def test_a_status_the_crd_would_not_keep_as_written_fails(change: Any, crd_problem: str) -> None:
    status = full_status()
    change(status)
    problems = typed_status_problems(status)
    assert any(p.startswith("CRD: ") and crd_problem in p for p in problems), problems
    crd_only = ("2147483648", "duplicate keys")
    if not any(marker in crd_problem for marker in crd_only):
        assert any(p.startswith("model: ") for p in problems), problems  # the strict model too


def test_the_structural_check_keeps_what_the_schema_preserves() -> None:
    schema = {
        "type": "object",
        "properties": {
            "open": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            "map": {"type": "object", "additionalProperties": {"type": "integer"}},
            "closed": {"type": "object"},
            "size": {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]},
        },
    }
    ok = {"open": {"anything": [1, {"x": None}]}, "map": {"a": 1}, "closed": {}, "size": "8Gi"}
    assert structural_errors(schema, ok) == []
    assert sorted(structural_errors(schema, {"map": {"a": "1"}, "closed": {"x": 1}, "size": 1.5})) == [
        "closed.x: unknown field (not in the schema: the API server prunes it)",
        "map.a: '1' is not an integer",
        "size: 1.5 is not an integer or a string",
    ]


def test_the_crd_status_schema_is_the_committed_files() -> None:
    assert set(STATUS_SCHEMA["properties"]) == {
        field.alias for field in ArcticInferenceServiceStatus.model_fields.values()
    }


# ---- patches -------------------------------------------------------------------------------


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386, as the API server applies application/merge-patch+json."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = apply_merge_patch(out.get(key), value)
    return out


def test_the_reconcile_patch_removes_a_cap_taken_out_of_the_spec_with_an_explicit_null() -> None:
    before = example(engine=EngineStatus(speculation_method="suffix", soft_cap=32, swift_kv=False))
    control = {"pods": [{"name": "llama-0", "ready": True, "metrics": "Ok"}]}  # the control loop's
    live = {**before, **control}
    after = example(engine=EngineStatus(speculation_method="suffix", swift_kv=False), previous=live)
    patch = reconcile_status_patch(live, after)
    # the Ready condition's time is kept (no flip), so only the engine's soft cap changes
    assert patch == {"engine": {"softCap": None}}
    stored = apply_merge_patch(live, patch)
    assert stored == {**after, **control} and assert_typed_status(stored)
    assert reconcile_status_patch(stored, after) == {}  # the next resync writes nothing


def test_the_reconcile_patch_keeps_what_an_invalid_spec_leaves_out() -> None:
    live = example(engine=EngineStatus(speculation_method="suffix", soft_cap=32))
    invalid = compute_status(
        name="llama",
        namespace="ml",
        generation=4,
        now=T1,
        previous=live,
        errors=PlanError("spec.swiftKV.enabled", "not in this runtime release yet"),
        plan=None,
        workload=None,
        service_port=8000,
    )
    assert "selector" not in invalid and "engine" not in invalid
    patch = reconcile_status_patch(live, invalid)
    assert set(patch) == {"observedGeneration", "conditions", "replicas", "readyReplicas", "updatedReplicas"}
    stored = apply_merge_patch(live, patch)
    # nothing rolls out while the spec is invalid: the selector and engine still describe what runs
    assert (stored["selector"], stored["engine"]) == (live["selector"], live["engine"])
    assert stored["conditions"] == invalid["conditions"] and assert_typed_status(stored)


def test_the_control_loop_patch_turns_the_live_fields_into_the_new_ones() -> None:
    full = full_status()
    live = {k: full[k] for k in ("autoscaling", "capController", "pods")}
    new = copy.deepcopy(live)
    del new["autoscaling"]["kvCacheUsage"]  # no pod reports it any more
    new["pods"][0] = {"name": "llama-1", "ready": False, "metrics": "NotReady"}
    patch = status_patch(live, new)
    assert patch == {"autoscaling": {"kvCacheUsage": None}, "pods": new["pods"]}
    assert apply_merge_patch(live, patch) == new and assert_typed_status(new)
