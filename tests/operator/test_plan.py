"""Planning: every sample resource -> the objects the operator applies (pure, no cluster)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from arctic_operator.plan import (
    ADMIN_TOKEN_PATH,
    DEFAULT_CPU_IMAGE,
    Plan,
    PlanError,
    PlanInputs,
    labels,
    plan,
)
from arctic_operator.validation import parse

SAMPLES = Path(__file__).resolve().parents[2] / "docs" / "samples"
INPUTS = PlanInputs(admin_token="t0k3n")


def sample(name: str, **meta: Any) -> Any:
    obj = yaml.safe_load((SAMPLES / f"{name}.yaml").read_text())
    obj["metadata"].update({"namespace": "ml", "uid": "1234-5678", **meta})
    return parse(obj)


def engine(p: Plan, kind: str = "Deployment") -> dict[str, Any]:
    container: dict[str, Any] = p.by_kind(kind)["spec"]["template"]["spec"]["containers"][0]
    return container


def arg(container: dict[str, Any], flag: str) -> str:
    args: list[str] = container["args"]
    return args[args.index(flag) + 1]


def test_cpu_sample_becomes_secret_deployment_service() -> None:
    p = plan(sample("smollm2-cpu"), INPUTS)
    assert [o["kind"] for o in p.objects] == ["Secret", "Deployment", "Service"]  # 1 replica: no PDB
    for obj in p.objects:
        assert obj["metadata"]["namespace"] == "ml"
        (owner,) = obj["metadata"]["ownerReferences"]
        assert owner["uid"] == "1234-5678" and owner["controller"] is True
        assert owner["kind"] == "ArcticInferenceService" and owner["name"] == "smollm2-cpu"
    c = engine(p)
    assert c["image"] == DEFAULT_CPU_IMAGE
    assert "nvidia.com/gpu" not in c["resources"].get("limits", {})
    assert arg(c, "--model") == "HuggingFaceTB/SmolLM2-135M-Instruct" and arg(c, "--revision") == "main"
    assert arg(c, "--served-model-name") == "smollm2-135m-instruct"
    assert json.loads(arg(c, "--speculative-config")) == {
        "method": "ngram",
        "num_speculative_tokens": 3,
        "prompt_lookup_max": 4,
        "prompt_lookup_min": 2,
    }
    # the caps go to the plugin in its own section (the contract's EngineSettings), not as Arctic's
    # spellings inside vLLM's speculative config
    assert json.loads(arg(c, "--additional-config")) == {
        "arctic": {"speculation": {"soft_cap": 4, "hard_cap": 16}}
    }
    extra = [
        "--dtype",
        "float32",
        "--enforce-eager",
        "--max-model-len",
        "1024",
        "--max-num-batched-tokens",
        "512",
    ]
    assert c["args"][-len(extra) :] == extra  # the escape hatch comes last, as written
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["ARCTIC_SERVE_ENABLED"] == "1" and env["ARCTIC_SERVE_ADMIN_TOKEN_FILE"] == ADMIN_TOKEN_PATH
    assert env["VLLM_PLUGINS"] == "arctic_serve,arctic_serve_admin" and env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert c["startupProbe"]["periodSeconds"] == 5 and c["startupProbe"]["failureThreshold"] == 60
    strategy = p.by_kind("Deployment")["spec"]["strategy"]["rollingUpdate"]
    assert strategy == {"maxSurge": 1, "maxUnavailable": 0}  # CPU: surge, no downtime
    assert p.by_kind("Secret")["stringData"] == {"token": "t0k3n"}
    assert p.by_kind("Service")["spec"]["selector"] == labels("smollm2-cpu") == p.selector


def test_suffix_sample_with_pvc_cache_is_a_statefulset_with_caps_and_gpus() -> None:
    p = plan(sample("llama-8b-suffix"), INPUTS)
    assert [o["kind"] for o in p.objects] == ["Secret", "StatefulSet", "Service", "PodDisruptionBudget"]
    assert p.warnings == [
        "spec.monitoring.serviceMonitor: the cluster has no ServiceMonitor CRD (monitoring.coreos.com/v1); "
        "none was created"
    ]
    sts = p.by_kind("StatefulSet")["spec"]
    assert sts["replicas"] == 2 and sts["volumeClaimTemplates"][0]["spec"]["resources"]["requests"] == {
        "storage": "50Gi"
    }
    c = engine(p, "StatefulSet")
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1" and c["resources"]["limits"]["memory"] == "64Gi"
    assert json.loads(arg(c, "--speculative-config")) == {
        "method": "suffix",
        "num_speculative_tokens": 16,
        "suffix_decoding_max_tree_depth": 64,
        "suffix_decoding_max_cached_requests": 4000,
        "suffix_decoding_max_spec_factor": 1.0,
        "suffix_decoding_min_token_prob": 0.1,
    }
    assert json.loads(arg(c, "--additional-config")) == {
        "arctic": {"speculation": {"soft_cap": 32, "hard_cap": 128}}
    }
    env = [e["name"] for e in c["env"]]
    assert env[0] == "HF_TOKEN"  # the user's (from a Secret), kept, before ours
    with_monitor = plan(sample("llama-8b-suffix"), PlanInputs(admin_token="x", service_monitor_crd=True))
    monitor = with_monitor.by_kind("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack" and not with_monitor.warnings


OPERATOR_PEER = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "arctic-system"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "arctic-serve-operator"}},
}


@pytest.mark.parametrize(("serving", "admin"), [(8000, 8001), (9000, 8001), (8001, 8002)])
def test_the_admin_port_is_on_the_pod_and_not_on_the_service(serving: int, admin: int) -> None:
    obj = yaml.safe_load((SAMPLES / "smollm2-cpu.yaml").read_text())
    obj["metadata"].update({"namespace": "ml", "uid": "1234-5678"})
    obj["spec"]["service"] = {"port": serving}
    p = plan(parse(obj), INPUTS)
    c = engine(p)
    assert c["ports"] == [
        {"name": "http", "containerPort": serving, "protocol": "TCP"},
        {"name": "admin", "containerPort": admin, "protocol": "TCP"},
    ]
    # the runtime reads its admin port from the environment the pod declares it in
    assert [e for e in c["env"] if e["name"] == "ARCTIC_SERVE_ADMIN_PORT"] == [
        {"name": "ARCTIC_SERVE_ADMIN_PORT", "value": str(admin)}
    ]
    assert arg(c, "--port") == str(serving)
    assert p.by_kind("Service")["spec"]["ports"] == [
        {"name": "http", "port": serving, "targetPort": "http", "protocol": "TCP"}
    ]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": "http"}
    with pytest.raises(KeyError):
        p.by_kind("NetworkPolicy")  # only when the operator is given a peer (the chart's option)


def test_the_network_policy_admits_only_the_operator_to_the_admin_port() -> None:
    p = plan(sample("smollm2-cpu"), PlanInputs(admin_token="t0k3n", admin_peer=OPERATOR_PEER))
    assert [o["kind"] for o in p.objects] == ["Secret", "Deployment", "Service", "NetworkPolicy"]
    policy = p.by_kind("NetworkPolicy")
    assert policy["metadata"]["name"] == "smollm2-cpu"
    assert policy["metadata"]["ownerReferences"][0]["uid"] == "1234-5678"
    assert policy["spec"] == {
        "podSelector": {"matchLabels": labels("smollm2-cpu")},
        "policyTypes": ["Ingress"],
        "ingress": [
            {"ports": [{"port": "http", "protocol": "TCP"}]},
            {"ports": [{"port": "admin", "protocol": "TCP"}], "from": [OPERATOR_PEER]},
        ],
    }


def test_user_env_cannot_override_the_plugin_switches() -> None:
    obj = yaml.safe_load((SAMPLES / "smollm2-cpu.yaml").read_text())
    obj["spec"]["env"].append({"name": "ARCTIC_SERVE_ENABLED", "value": "0"})
    obj["spec"]["env"].append({"name": "ARCTIC_SERVE_ADMIN_PORT", "value": "8000"})
    c = engine(plan(parse(obj), INPUTS))
    env = [e for e in c["env"] if e["name"] in ("ARCTIC_SERVE_ENABLED", "ARCTIC_SERVE_ADMIN_PORT")]
    assert env == [
        {"name": "ARCTIC_SERVE_ENABLED", "value": "1"},
        {"name": "ARCTIC_SERVE_ADMIN_PORT", "value": "8001"},
    ]


@pytest.mark.parametrize(("current", "expected"), [(None, 2), (1, 2), (5, 5), (50, 10)])
def test_autoscaled_replicas_stay_inside_the_bounds(current: int | None, expected: int) -> None:
    obj = yaml.safe_load((SAMPLES / "smollm2-cpu.yaml").read_text())
    del obj["spec"]["replicas"]
    obj["spec"]["autoscaling"] = {"minReplicas": 2, "maxReplicas": 10}
    p = plan(parse(obj), PlanInputs(admin_token="x", current_replicas=current))
    assert p.replicas == expected and p.by_kind("Deployment")["spec"]["replicas"] == expected
    assert p.by_kind("PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def test_shift_parallel_sample_runs_tensor_x_ulysses_ranks_with_a_doubled_startup_budget() -> None:
    p = plan(sample("llama-70b-shift-parallel"), INPUTS)
    c = engine(p, "StatefulSet")
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "8"  # tensor 2 x ulysses 4
    assert arg(c, "--tensor-parallel-size") == "2"
    assert json.loads(arg(c, "--additional-config")) == {
        "arctic": {
            "parallel": {"ulysses": 4, "shift": True, "shift_threshold": 512},
            "speculation": {"soft_cap": 16, "hard_cap": 64},
        }
    }
    # two models load and warm up: the written 360 x 10 s budget is doubled
    assert c["startupProbe"]["failureThreshold"] == 720 and c["startupProbe"]["periodSeconds"] == 10
    # the ranks exchange tensors through shared memory
    volumes = {v["name"]: v for v in p.by_kind("StatefulSet")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["dshm"] == {"name": "dshm", "emptyDir": {"medium": "Memory"}}


def test_ulysses_without_shift_keeps_the_startup_budget() -> None:
    obj = yaml.safe_load((SAMPLES / "llama-70b-shift-parallel.yaml").read_text())
    obj["spec"]["parallelism"]["shiftParallel"] = {"enabled": False}
    c = engine(plan(parse(obj), INPUTS), "StatefulSet")
    assert json.loads(arg(c, "--additional-config"))["arctic"]["parallel"] == {
        "ulysses": 4,
        "shift": False,
        "shift_threshold": 512,
    }
    assert c["startupProbe"]["failureThreshold"] == 360
    # on a Deployment (emptyDir cache) the rollout deadline follows the doubled budget too
    obj["spec"]["parallelism"]["shiftParallel"] = {"enabled": True}
    obj["spec"]["modelCache"] = {"volume": "emptyDir", "size": "200Gi"}
    deployment = plan(parse(obj), INPUTS).by_kind("Deployment")["spec"]
    assert deployment["progressDeadlineSeconds"] == 720 * 10 + 120


@pytest.mark.parametrize(
    ("name", "field"),
    [
        ("llama-8b-arctic-speculator", "spec.speculation.method"),
    ],
)
def test_features_not_in_this_runtime_are_refused_with_the_field(name: str, field: str) -> None:
    with pytest.raises(PlanError) as err:
        plan(sample(name), INPUTS)
    assert err.value.field == field and "not in this runtime release yet" in err.value.message


def test_swiftkv_is_passed_to_the_engine() -> None:
    """spec.swiftKV.enabled reaches the plugin's section of --additional-config (the engine then
    checks that the model is a SwiftKV checkpoint)."""
    p = plan(sample("swiftkv-8b-autoscaled"), INPUTS)
    kind = next(o["kind"] for o in p.objects if o["kind"] in ("Deployment", "StatefulSet"))
    section = json.loads(arg(engine(p, kind), "--additional-config"))["arctic"]
    assert section["swiftkv"] == {"enabled": True}


def test_gpu_rollout_needs_no_spare_gpu() -> None:
    obj = yaml.safe_load((SAMPLES / "smollm2-cpu.yaml").read_text())
    obj["spec"]["gpusPerPod"] = 1
    obj["spec"]["replicas"] = 3
    deployment = plan(parse(obj), INPUTS).by_kind("Deployment")["spec"]
    assert deployment["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}


def test_every_planned_object_passes_the_kubernetes_schemas(tmp_path: Path) -> None:
    """Rendered manifests for every sample the runtime can serve, checked by kubernetes-validate
    --strict (the real upstream schemas; custom resources like ServiceMonitor are skipped by it)."""
    docs: list[dict[str, Any]] = []
    for path in sorted(SAMPLES.glob("*.yaml")):
        try:
            p = plan(
                sample(path.stem),
                PlanInputs(
                    admin_token="x", service_monitor_crd=True, pod_monitor_crd=True, admin_peer=OPERATOR_PEER
                ),
            )
        except PlanError:
            continue
        docs += [o for o in p.objects if o["apiVersion"] != "monitoring.coreos.com/v1"]
    assert {d["kind"] for d in docs} >= {
        "Secret",
        "Deployment",
        "StatefulSet",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
    }
    out = tmp_path / "planned.yaml"
    out.write_text(yaml.safe_dump_all(docs))
    proc = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", "1.30.0", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_a_model_baked_into_the_image_is_served_from_its_path_without_a_download() -> None:
    obj = yaml.safe_load((SAMPLES / "smollm2-cpu.yaml").read_text())
    obj["metadata"].update({"namespace": "ml", "uid": "1234-5678"})
    obj["spec"]["model"] = {"source": {"imagePath": "/models/SmolLM2-135M-Instruct"}}
    obj["spec"]["runtime"] = {"image": "registry.example/arctic-serve/runtime-cpu-smollm2:0.1.0"}
    c = engine(plan(parse(obj), INPUTS))
    assert arg(c, "--model") == "/models/SmolLM2-135M-Instruct"
    assert "--revision" not in c["args"] and "--load-format" not in c["args"]
    assert c["image"] == "registry.example/arctic-serve/runtime-cpu-smollm2:0.1.0"
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    # no volume is mounted over the image's own folder (it would hide the weights)
    assert not any(path == m or path.startswith(m + "/") for m in mounts for path in [arg(c, "--model")])


def test_drafts_in_prefill_steps_reaches_the_engine_only_when_off() -> None:
    """spec.speculation.draftsInPrefillSteps false: the plugin's section says so, beside the caps,
    and the runtime's parser reads it back; true (the default) writes nothing."""
    from arctic_runtime.contract import parse_engine_settings

    obj = yaml.safe_load((SAMPLES / "smollm2-cpu.yaml").read_text())
    obj["spec"]["speculation"]["draftsInPrefillSteps"] = False
    additional = json.loads(arg(engine(plan(parse(obj), INPUTS)), "--additional-config"))
    assert additional == {
        "arctic": {"speculation": {"soft_cap": 4, "hard_cap": 16, "drafts_in_prefill_steps": False}}
    }
    assert parse_engine_settings(additional).drafts_in_prefill_steps is False
    obj["spec"]["speculation"]["draftsInPrefillSteps"] = True
    on = json.loads(arg(engine(plan(parse(obj), INPUTS)), "--additional-config"))
    assert on == {"arctic": {"speculation": {"soft_cap": 4, "hard_cap": 16}}}
