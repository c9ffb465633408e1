"""Every sample in docs/samples is a valid ArcticInferenceService for the CRD (schema, CEL) and for
``validate()``, and together they cover the use cases the docs promise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from arctic_operator.api import API_VERSION, KIND, MAX_NAME_LENGTH
from arctic_operator.validation import parse, validate
from tests.operator.apiserver_rules import SAMPLES_DIR, CelRules, admit, apply_defaults, load_yaml

SAMPLES = sorted(SAMPLES_DIR.glob("*.yaml"))


def test_there_are_samples() -> None:
    assert len(SAMPLES) >= 6, SAMPLES


@pytest.mark.parametrize("path", SAMPLES, ids=[p.name for p in SAMPLES])
def test_sample_is_valid(path: Path, crd: dict[str, Any], schema: dict[str, Any], cel: CelRules) -> None:
    obj = load_yaml(path)
    assert (obj["apiVersion"], obj["kind"]) == (API_VERSION, KIND)
    assert len(obj["metadata"]["name"]) <= MAX_NAME_LENGTH
    assert admit(crd, obj, cel) == [], "the API server would reject it"
    assert [str(e) for e in validate(obj)] == []
    # What the API server stores (its defaults applied) is what the operator's model holds.
    assert parse(obj).dump() == apply_defaults(schema, obj)


def _specs() -> list[dict[str, Any]]:
    return [load_yaml(p)["spec"] for p in SAMPLES]


def test_samples_cover_the_use_cases() -> None:
    specs = _specs()
    methods = {s.get("speculation", {}).get("method", "none") for s in specs}
    assert {"suffix", "arctic", "ngram"} <= methods
    assert any(s.get("gpusPerPod") == 0 for s in specs), "a CPU sample"
    assert any(
        s.get("parallelism", {}).get("shiftParallel", {}).get("enabled")
        and s["parallelism"]["tensor"] == 2
        and s["parallelism"]["ulysses"] == 4
        and s["gpusPerPod"] == 8
        for s in specs
    ), "shift parallelism on 8 GPUs, tensor 2 x ulysses 4"
    assert any(s.get("speculation", {}).get("capController", {}).get("enabled") for s in specs)
    assert any(s.get("swiftKV", {}).get("enabled") for s in specs)
    assert any("autoscaling" in s for s in specs) and any("replicas" in s for s in specs)
    assert {kind for s in specs for kind in s["model"]["source"]} == {"hub", "pvc", "uri"}
    assert any(s.get("modelCache", {}).get("volume") == "pvc" for s in specs)
    assert any(s.get("scheduling", {}).get("affinity") for s in specs)
    assert any(s.get("monitoring", {}).get("serviceMonitor", {}).get("enabled") for s in specs)
    assert any(s.get("monitoring", {}).get("podMonitor", {}).get("enabled") for s in specs)


def test_smollm2_cpu_sample_is_the_model_make_serve_runs() -> None:
    spec = load_yaml(SAMPLES_DIR / "smollm2-cpu.yaml")["spec"]
    assert spec["model"]["source"]["hub"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert spec["model"]["servedName"] == "smollm2-135m-instruct"
