"""Golden manifests: for every sample and each option the planner branches on, the exact objects
``plan()`` returns, compared with files under tests/operator/data/manifests/ (reviewed like code).

A change to the planner shows here as a diff of the objects users get. After an intended change,
regenerate with ``ARCTIC_UPDATE_GOLDEN=1 .venv/bin/pytest tests/operator/test_manifests.py`` and
review the diff; with the variable unset a missing or different file fails.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from arctic_operator.plan import PlanInputs, plan
from arctic_operator.validation import parse

HERE = Path(__file__).resolve().parent
SAMPLES = HERE.parents[1] / "docs" / "samples"
GOLDEN = HERE / "data" / "manifests"
SERVED = [
    "smollm2-cpu",
    "llama-8b-suffix",
    "llama-70b-shift-parallel",
    "pvc-model-keda",
    "s3-model-loadbalancer",
]


def _sample(name: str) -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load((SAMPLES / f"{name}.yaml").read_text())
    obj["metadata"].update({"namespace": "ml", "uid": "1234-5678"})
    return obj


def _with(name: str, **spec: Any) -> dict[str, Any]:
    obj = _sample(name)
    obj["spec"].update(copy.deepcopy(spec))
    return obj


#: The chart's operator, as settings.OperatorSettings.admin_peer selects it.
OPERATOR_PEER = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "arctic-system"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "arctic-serve-operator"}},
}

# (golden file, resource, inputs): each sample as written, then one option at a time
CASES: list[tuple[str, dict[str, Any], PlanInputs]] = [
    *((name, _sample(name), PlanInputs(admin_token="t0k3n")) for name in SERVED),
    (
        "llama-8b-suffix-with-servicemonitor-crd",
        _sample("llama-8b-suffix"),
        PlanInputs(admin_token="t0k3n", service_monitor_crd=True),
    ),
    (
        "llama-70b-with-podmonitor-crd",
        _sample("llama-70b-shift-parallel"),
        PlanInputs(admin_token="t0k3n", pod_monitor_crd=True),
    ),
    (
        "smollm2-cpu-autoscaled-at-3",
        _with("smollm2-cpu", replicas=None, autoscaling={"minReplicas": 1, "maxReplicas": 4}),
        PlanInputs(admin_token="t0k3n", current_replicas=3),
    ),
    (
        "smollm2-cpu-pvc-cache-storage-class",
        _with("smollm2-cpu", modelCache={"volume": "pvc", "size": "5Gi", "storageClassName": "fast-ssd"}),
        PlanInputs(admin_token="t0k3n"),
    ),
    (
        "smollm2-cpu-scheduling-and-pull-secrets",
        _with(
            "smollm2-cpu",
            scheduling={
                "nodeSelector": {"pool": "cpu"},
                "tolerations": [
                    {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}
                ],
                "priorityClassName": "batch",
            },
            runtime={"image": "registry.example.com/runtime-cpu:1", "pullSecrets": [{"name": "regcred"}]},
            service={"type": "NodePort", "port": 9000, "annotations": {"example.com/team": "ml"}},
        ),
        PlanInputs(admin_token="t0k3n"),
    ),
    (
        "smollm2-cpu-image-path",
        _with("smollm2-cpu", model={"source": {"imagePath": "/models/smollm2-135m-instruct"}}),
        PlanInputs(admin_token="t0k3n", default_cpu_image="example.com/cpu:2"),
    ),
    (
        # the compile caches on the node (hostPath); requests only: no empty limits written
        "smollm2-cpu-compile-cache-on-the-node",
        _with(
            "smollm2-cpu",
            compileCache={"volume": "hostPath"},
            resources={"requests": {"cpu": "2", "memory": "4Gi"}},
        ),
        PlanInputs(admin_token="t0k3n"),
    ),
    (
        "llama-8b-suffix-compile-cache-on-a-claim",
        _with("llama-8b-suffix", compileCache={"volume": "pvc", "claimName": "vllm-compile-cache"}),
        PlanInputs(admin_token="t0k3n"),
    ),
    (
        # serving on the admin API's default port moves the admin port to the next one
        "smollm2-cpu-network-policy-serving-on-8001",
        _with("smollm2-cpu", service={"port": 8001}),
        PlanInputs(admin_token="t0k3n", admin_peer=OPERATOR_PEER),
    ),
]


def _dump(objects: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(objects, sort_keys=True, default_flow_style=False, width=100)


@pytest.mark.parametrize(("name", "resource", "inputs"), CASES, ids=[c[0] for c in CASES])
def test_planned_objects_match_the_golden_manifests(
    name: str, resource: dict[str, Any], inputs: PlanInputs
) -> None:
    for key in [k for k, v in resource["spec"].items() if v is None]:
        del resource["spec"][key]
    got = _dump(plan(parse(resource), inputs).objects)
    path = GOLDEN / f"{name}.yaml"
    if os.environ.get("ARCTIC_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(got)
    assert path.exists(), f"{path} is missing: run with ARCTIC_UPDATE_GOLDEN=1 and review it"
    assert got == path.read_text(), f"{name}: the planned objects differ from {path.name}"
