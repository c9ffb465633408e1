"""The typed models: defaults equal to the CRD's, lossless round trips, camelCase on the wire."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from arctic_operator.api import (
    API_VERSION,
    KIND,
    ArcticInferenceService,
    ArcticInferenceServiceSpec,
    ArcticInferenceServiceStatus,
    Condition,
    EngineStatus,
    ModelSource,
    ModelSpec,
    ObjectMeta,
    SpeculationSpec,
)
from arctic_operator.validation import parse, validate
from tests.operator.apiserver_rules import SAMPLES_DIR, apply_defaults, load_yaml, schema_errors

MINIMAL: dict[str, Any] = {
    "apiVersion": API_VERSION,
    "kind": KIND,
    "metadata": {"name": "tiny"},
    "spec": {"model": {"source": {"hub": "org/model"}}},
}


def test_model_defaults_are_the_crd_defaults(schema: dict[str, Any]) -> None:
    """The API server stores what the operator's model holds for the same input: for the smallest
    resource (every section defaulted) and one with sections partly given."""
    partial = {
        **MINIMAL,
        "spec": {
            **MINIMAL["spec"],
            "parallelism": {"shiftParallel": {"threshold": 256}},
            "speculation": {"suffix": {"maxTreeDepth": 32}},
            "autoscaling": {"maxReplicas": 3, "scaleDown": {}},
            "probes": {"startup": {"failureThreshold": 12}},
        },
    }
    for obj in (MINIMAL, partial):
        assert parse(obj).dump() == apply_defaults(schema, obj)


def test_literal_defaults_match_the_constants() -> None:
    fields = ArcticInferenceService.model_fields
    assert fields["api_version"].default == API_VERSION
    assert fields["kind"].default == KIND


def test_dump_is_camel_case_and_leaves_unset_fields_out() -> None:
    dumped = parse(MINIMAL).dump()
    spec = dumped["spec"]
    assert "gpusPerPod" in spec and "swiftKV" in spec and "modelCache" in spec
    assert "replicas" not in spec and "autoscaling" not in spec and "status" not in dumped
    assert "softCap" not in spec["speculation"]
    assert spec["speculation"]["capController"] == {
        "enabled": False,
        "min": 1,
        "max": 64,
        "ttftBudgetPercent": 1.0,
        "refineCosts": True,
    }


@pytest.mark.parametrize("path", sorted(SAMPLES_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_round_trip_is_lossless(path: Any) -> None:
    resource = parse(load_yaml(path))
    again = ArcticInferenceService.model_validate(resource.dump())
    assert again == resource
    assert again.dump() == resource.dump()


def test_status_round_trip_and_schema(schema: dict[str, Any]) -> None:
    now = datetime(2026, 11, 25, 12, 30, tzinfo=UTC)
    status = ArcticInferenceServiceStatus(
        observed_generation=3,
        conditions=[
            Condition(type="Ready", status="True", reason="ReplicasReady", last_transition_time=now),
            Condition(
                type="Degraded",
                status="True",
                reason="InvalidSpec",
                message="spec.speculation.hardCap: must be >= spec.speculation.softCap (got 2 < 4)",
                last_transition_time=now,
                observed_generation=3,
            ),
        ],
        replicas=2,
        ready_replicas=1,
        updated_replicas=2,
        selector="app.kubernetes.io/instance=tiny",
        endpoint="http://tiny.default.svc:8000/v1",
        engine=EngineStatus(
            speculation_method="suffix", num_speculative_tokens=16, soft_cap=12, swift_kv=False
        ),
    )
    obj = {**MINIMAL, "status": status.dump()}
    assert obj["status"]["conditions"][0]["lastTransitionTime"] == "2026-11-25T12:30:00Z"
    assert obj["status"]["engine"] == {
        "speculationMethod": "suffix",
        "numSpeculativeTokens": 16,
        "softCap": 12,
        "swiftKV": False,
    }
    assert validate(obj) == []
    assert schema_errors(schema, apply_defaults(schema, obj)) == []
    assert parse(obj).status == status


def test_models_accept_python_names() -> None:
    spec = ArcticInferenceServiceSpec(
        model=ModelSpec(source=ModelSource(hub="org/model"), served_name="m"),
        speculation=SpeculationSpec(method="suffix", soft_cap=4, hard_cap=8),
        gpus_per_pod=1,
    )
    resource = ArcticInferenceService(metadata=ObjectMeta(name="typed"), spec=spec)
    dumped = resource.dump()
    assert dumped["spec"]["speculation"]["softCap"] == 4
    assert dumped["spec"]["model"]["servedName"] == "m"
    assert validate(dumped) == []


def test_metadata_keeps_other_fields() -> None:
    obj = {**MINIMAL, "metadata": {"name": "tiny", "namespace": "ns", "labels": {"a": "b"}, "generation": 4}}
    assert parse(obj).dump()["metadata"] == obj["metadata"]


def test_drafts_in_prefill_steps_in_the_crd(schema: dict[str, Any]) -> None:
    """spec.speculation.draftsInPrefillSteps: a boolean, true when absent (vLLM's behaviour), on the
    API server as in the model; anything but a boolean is refused."""
    field = schema["properties"]["spec"]["properties"]["speculation"]["properties"]["draftsInPrefillSteps"]
    assert field["type"] == "boolean" and field["default"] is True
    assert "prefill" in field["description"]
    stored = apply_defaults(schema, MINIMAL)
    assert stored["spec"]["speculation"]["draftsInPrefillSteps"] is True
    assert parse(MINIMAL).spec.speculation.drafts_in_prefill_steps is True
    off = {**MINIMAL, "spec": {**MINIMAL["spec"], "speculation": {"draftsInPrefillSteps": False}}}
    assert parse(off).spec.speculation.drafts_in_prefill_steps is False
    assert parse(off).dump() == apply_defaults(schema, off)
    bad = {**MINIMAL, "spec": {**MINIMAL["spec"], "speculation": {"draftsInPrefillSteps": "no"}}}
    errors = schema_errors(schema, apply_defaults(schema, bad))
    assert [path for path, _ in errors] == ["spec.speculation.draftsInPrefillSteps"], errors
