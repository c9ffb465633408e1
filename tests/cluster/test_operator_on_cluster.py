"""The operator on a real control plane (Kubernetes 1.37.2, kwok GPU nodes): what users see.

One cluster, one chart install and one operator process for the module (see conftest.py); every
test uses its own ArcticInferenceService names so they do not interfere.
"""

from __future__ import annotations

import copy
import json
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.cluster.conftest import APPS_NS, OPERATOR_NS, OPERATOR_SA, RELEASE, REPO, Kube, OperatorProcess

from arctic_operator.plan import ADMIN_PORT_NAME, ENGINE_PORT_NAME

SAMPLES = REPO / "docs" / "samples"
SERVED = [
    "smollm2-cpu",
    "llama-8b-suffix",
    "llama-70b-shift-parallel",
    "pvc-model-keda",
    "s3-model-loadbalancer",
    "swiftkv-8b-autoscaled",
    "smollm2-swiftkv-cpu",
]
REFUSED = {
    "llama-8b-arctic-speculator": "spec.speculation.method",
}


def sample(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((SAMPLES / f"{name}.yaml").read_text())
    return doc


def cpu_service(name: str, **spec: Any) -> dict[str, Any]:
    """A small CPU ArcticInferenceService (the smollm2 sample, renamed), with ``spec`` merged in."""
    doc = sample("smollm2-cpu")
    doc["metadata"] = {"name": name}
    doc["spec"].update(spec)
    return doc


@pytest.fixture(scope="module")
def ready(kube: Kube, operator: OperatorProcess) -> Kube:
    # what the samples reference and a user creates first: the model PVCs, the priority class
    for claim in ("models", "swiftkv-models"):
        kube.apply(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": claim},
                "spec": {"accessModes": ["ReadOnlyMany"], "resources": {"requests": {"storage": "20Gi"}}},
            }
        )
    kube.apply(
        {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": "inference-critical"},
            "value": 1000000,
        }
    )
    return kube


def test_every_served_sample_becomes_ready_on_gpu_nodes(ready: Kube, operator: OperatorProcess) -> None:
    for name in [*SERVED, *REFUSED]:
        ready.apply((SAMPLES / f"{name}.yaml").read_text())
    for name in SERVED:
        ais = sample(name)["metadata"]["name"]
        ready.wait_condition(ais, "Ready", "True", "ReplicasReady", timeout=90)
        ready.wait_condition(ais, "Degraded", "False")
    # the GPU pods landed on the kwok GPU nodes with their GPUs, under Pod Security "restricted"
    pods = json.loads(
        ready.kubectl(
            "get", "pods", "-n", APPS_NS, "-l", "app.kubernetes.io/instance=llama-70b-shift", "-o", "json"
        ).stdout
    )["items"]
    assert len(pods) == 1
    assert pods[0]["spec"]["nodeName"].startswith("gpu-node-")
    assert pods[0]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert pods[0]["spec"]["automountServiceAccountToken"] is False
    assert pods[0]["spec"]["securityContext"]["fsGroup"] == 10001
    # the StatefulSet samples got a model-cache claim per replica, bound
    claims = json.loads(
        ready.kubectl(
            "get", "pvc", "-n", APPS_NS, "-l", "app.kubernetes.io/instance=llama-8b-suffix", "-o", "json"
        ).stdout
    )["items"]
    assert sorted(c["status"]["phase"] for c in claims) == ["Bound", "Bound"]
    for name, field in REFUSED.items():
        ais = sample(name)["metadata"]["name"]
        degraded = ready.wait_condition(ais, "Degraded", "True", "InvalidSpec")
        assert field in degraded["message"]
    assert operator.forbidden() == [], "the chart's RBAC refused the operator something"


def test_kubectl_explain_documents_the_fields(ready: Kube) -> None:
    out = ready.kubectl("explain", "ais.spec.gpusPerPod").stdout
    assert "FIELD: gpusPerPod <integer>" in out and "GPU" in out


def test_kubectl_scale_goes_through_the_scale_subresource(ready: Kube) -> None:
    ready.apply(cpu_service("scaled", replicas=1))
    ready.wait_condition("scaled", "Ready", "True", "ReplicasReady", timeout=60)
    ready.kubectl("scale", "-n", APPS_NS, "ais/scaled", "--replicas=3")
    ready.wait_for(
        "3 ready replicas",
        lambda: ((ready.get("deployment", "scaled") or {}).get("status") or {}).get("readyReplicas") == 3,
    )
    ready.wait_condition("scaled", "Ready", "True", "ReplicasReady")
    assert (ready.get("ais", "scaled") or {})["status"]["readyReplicas"] == 3
    ready.kubectl("scale", "-n", APPS_NS, "ais/scaled", "--replicas=0")
    ready.wait_condition("scaled", "Ready", "True", "ScaledToZero", timeout=60)
    assert ready.condition("scaled", "Progressing")["reason"] == "ScaledToZero"  # same status write


def test_drift_is_put_back_and_removed_fields_are_removed(ready: Kube) -> None:
    ready.apply(
        cpu_service("drift", env=[{"name": "EXTRA", "value": "1"}], extraArgs=["--max-num-seqs", "8"])
    )
    ready.wait_condition("drift", "Ready", "True", timeout=60)
    # drift: a hand edit of the Deployment's pod template is put back
    ready.kubectl("set", "env", "-n", APPS_NS, "deployment/drift", "EXTRA=hand-edited")

    def env_of() -> dict[str, str]:
        dep = ready.get("deployment", "drift") or {}
        return {
            e["name"]: e.get("value", "") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]
        }

    ready.wait_for("EXTRA=1 again", lambda: env_of().get("EXTRA") == "1", timeout=30)
    # removed from the spec: removed from the Deployment (server-side apply, one field manager)
    ready.kubectl(
        "patch",
        "-n",
        APPS_NS,
        "ais/drift",
        "--type=json",
        "-p",
        json.dumps([{"op": "remove", "path": "/spec/env/0"}, {"op": "remove", "path": "/spec/extraArgs"}]),
    )
    ready.wait_for("EXTRA gone from the Deployment", lambda: "EXTRA" not in env_of(), timeout=30)
    args = (ready.get("deployment", "drift") or {})["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--max-num-seqs" not in args
    # emptyDir -> PVC model cache: the StatefulSet replaces the Deployment, which is deleted
    ready.kubectl(
        "patch",
        "-n",
        APPS_NS,
        "ais/drift",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"modelCache": {"volume": "pvc", "size": "2Gi"}}}),
    )
    ready.wait_for("the StatefulSet", lambda: ready.get("statefulset", "drift"), timeout=30)
    ready.wait_for("the Deployment gone", lambda: ready.get("deployment", "drift") is None, timeout=30)
    ready.wait_condition("drift", "Ready", "True", "ReplicasReady", timeout=60)


def test_unschedulable_request_is_reported_as_such(ready: Kube) -> None:
    ready.apply(cpu_service("too-big", gpusPerPod=16, parallelism={"tensor": 16}))
    degraded = ready.wait_condition("too-big", "Degraded", "True", "Unschedulable", timeout=60)
    assert "Insufficient nvidia.com/gpu" in degraded["message"]
    ready.wait_condition("too-big", "Progressing", "True", "Unschedulable", timeout=30)
    ready.kubectl("delete", "-n", APPS_NS, "ais/too-big")


def test_name_conflict_is_reported_and_nothing_is_taken_over(ready: Kube) -> None:
    ready.apply(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "taken"},
            "spec": {"ports": [{"port": 80}], "selector": {"app": "someone-else"}},
        }
    )
    ready.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "taken-admin"},
            "stringData": {"token": "the user's own"},
        }
    )
    ready.apply(cpu_service("taken"))
    degraded = ready.wait_condition("taken", "Degraded", "True", "NameConflict", timeout=60)
    assert "Secret/taken-admin" in degraded["message"]
    assert ready.get("deployment", "taken") is None  # no pod mounts the user's Secret
    ready.kubectl("delete", "-n", APPS_NS, "ais/taken", "--wait=true", "--timeout=60s")
    service, secret = ready.get("service", "taken"), ready.get("secret", "taken-admin")
    assert service is not None and secret is not None
    assert (
        service["spec"]["selector"] == {"app": "someone-else"}
        and "ownerReferences" not in service["metadata"]
    )


def test_children_the_api_rejects_are_reported_with_its_message(ready: Kube) -> None:
    # affinity passes through the CRD unchecked (core/v1 Affinity); the API server checks it on the
    # Deployment: the server-side dry run reports that, and nothing of the engines is applied
    term = {"matchExpressions": [{"key": "zone", "operator": "Nearby", "values": ["a"]}]}
    affinity = {
        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}
    }
    ready.apply(cpu_service("rejected", scheduling={"affinity": affinity}))
    degraded = ready.wait_condition("rejected", "Degraded", "True", "ChildRejected", timeout=60)
    assert "Deployment/rejected" in degraded["message"] and "Nearby" in degraded["message"]
    assert ready.get("deployment", "rejected") is None
    assert ready.get("service", "rejected") is None


def test_delete_collects_the_children(ready: Kube) -> None:
    ready.apply(cpu_service("doomed"))
    ready.wait_condition("doomed", "Ready", "True", timeout=60)
    ready.kubectl("delete", "-n", APPS_NS, "ais/doomed", "--wait=true", "--timeout=60s")
    for kind, name in (("deployment", "doomed"), ("service", "doomed"), ("secret", "doomed-admin")):

        def gone(k: str = kind, n: str = name) -> bool:
            return ready.get(k, n) is None

        ready.wait_for(f"{kind}/{name} collected", gone, timeout=60)
    pods = ready.kubectl(
        "get", "pods", "-n", APPS_NS, "-l", "app.kubernetes.io/instance=doomed", "-o", "name"
    )
    ready.wait_for(
        "pods gone",
        lambda: (
            ready.kubectl(
                "get", "pods", "-n", APPS_NS, "-l", "app.kubernetes.io/instance=doomed", "-o", "name"
            ).stdout
            == ""
        ),
        timeout=60,
    )
    assert pods.returncode == 0


def test_operator_restart_mid_reconcile(ready: Kube, operator: OperatorProcess) -> None:
    ready.apply(cpu_service("restarted", replicas=2))
    ready.wait_for("the Secret", lambda: ready.get("secret", "restarted-admin"), timeout=30)
    operator.stop(signal.SIGKILL)  # no clean shutdown: kopf's state stays as it was mid-work
    operator.start()
    ready.wait_condition("restarted", "Ready", "True", "ReplicasReady", timeout=90)
    replica_sets = ready.kubectl(
        "get", "rs", "-n", APPS_NS, "-l", "app.kubernetes.io/instance=restarted", "-o", "name"
    ).stdout.split()
    assert len(replica_sets) == 1


def test_ready_follows_the_workload_by_its_event_not_by_the_resync(
    ready: Kube, operator: OperatorProcess, tmp_path: Path
) -> None:
    """With a resync of an hour, a resource becomes Ready seconds after its pod does: the workload's
    watch event starts a pass (handlers.refresh), not the periodic resync. The pod waits for a node
    with a label until the test gives one that label, after the resource's first passes are done."""
    operator.stop()
    slow = OperatorProcess(ready, tmp_path, env={"ARCTIC_OPERATOR_RESYNC_SECONDS": "3600"})
    slow.start()
    pool = "arctic-serve.dev/test-pool"
    try:
        ready.apply(cpu_service("evented", scheduling={"nodeSelector": {pool: "evented"}}))
        ready.wait_condition("evented", "Ready", "False", "NoReadyReplicas", timeout=60)

        def created() -> bool:  # the first pass done; the resync's first: in 3600 s
            return any(
                "Handler 'reconcile-create' succeeded" in line and '"name": "evented"' in line
                for line in slow.log.read_text(errors="replace").splitlines()
            )

        ready.wait_for("the first pass over ais/evented", created, timeout=60)
        ready.kubectl("label", "node", "gpu-node-0", f"{pool}=evented")

        def pod_ready() -> bool:
            return ((ready.get("deployment", "evented") or {}).get("status") or {}).get("readyReplicas") == 1

        ready.wait_for("the pod ready on the labelled node", pod_ready, timeout=60)
        ready.wait_condition("evented", "Ready", "True", "ReplicasReady", timeout=10)
        assert not slow.forbidden(), slow.forbidden()
    finally:
        ready.kubectl("label", "node", "gpu-node-0", f"{pool}-")
        ready.kubectl("delete", "ais", "evented", "-n", APPS_NS, "--wait=true", "--timeout=60s", check=False)
        slow.stop()
        operator.start()


def test_rbac_is_least_privilege(ready: Kube) -> None:
    who = f"system:serviceaccount:{OPERATOR_NS}:{OPERATOR_SA}"

    def can(*args: str) -> bool:
        return (
            ready.kubectl("auth", "can-i", *args, "--as", who, "-n", APPS_NS, check=False).stdout.strip()
            == "yes"
        )

    assert can("create", "deployments") and can("patch", "services") and can("create", "secrets")
    assert not can("list", "secrets") and not can("update", "secrets") and not can("patch", "secrets")
    assert not can("delete", "secrets") and not can("create", "pods") and not can("get", "nodes")
    # the children are watched (the operator's cache); engine pods are listed, never watched or written
    assert can("watch", "deployments") and can("list", "pods")
    assert not can("watch", "pods") and not can("delete", "pods")
    assert not can("watch", "secrets")


def test_helm_upgrade_with_a_changed_crd(ready: Kube, tmp_path: Path) -> None:
    chart = tmp_path / "arctic-serve"
    import shutil

    shutil.copytree(REPO / "charts" / "arctic-serve", chart)
    crd_file = next((chart / "files" / "crds").glob("*.yaml"))
    crd = yaml.safe_load(crd_file.read_text())
    version = crd["spec"]["versions"][0]
    columns = copy.deepcopy(version.get("additionalPrinterColumns") or [])
    columns.append({"name": "Upgraded", "type": "string", "jsonPath": ".spec.model.servedName"})
    version["additionalPrinterColumns"] = columns
    crd_file.write_text(yaml.safe_dump(crd))
    ready.helm("upgrade", RELEASE, str(chart), "-n", OPERATOR_NS, "--set", "operator.replicas=0")
    out = ready.kubectl("get", "ais", "-n", APPS_NS).stdout
    assert "UPGRADED" in out.splitlines()[0]
    assert "smollm2-cpu" in out  # the resources outlived the upgrade


def test_network_policy_admits_only_the_operator_to_the_admin_port(
    ready: Kube, operator: OperatorProcess, tmp_path: Path
) -> None:
    """The chart's networkPolicy.enabled: RBAC for NetworkPolicies, and the operator (with the
    settings the chart's Deployment gives it) makes one per service that the API server accepts,
    whose named ports exist on the engine pods, owned by the service (collected with it)."""
    chart = str(REPO / "charts" / "arctic-serve")
    ready.helm("upgrade", RELEASE, chart, "-n", OPERATOR_NS, "--set", "operator.replicas=0",
               "--set", "networkPolicy.enabled=true")  # fmt: skip
    deployment = json.loads(ready.kubectl("get", "deployment", "-n", OPERATOR_NS, "-o", "json").stdout)[
        "items"
    ][0]
    (container,) = [
        c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "operator"
    ]
    env = {
        e["name"]: e.get("value", "")
        for e in container.get("env", [])
        if e["name"].startswith("ARCTIC_OPERATOR_")
    }
    assert env["ARCTIC_OPERATOR_NETWORK_POLICY"] == "true"
    pod_labels = dict(pair.split("=", 1) for pair in env["ARCTIC_OPERATOR_POD_LABELS"].split(","))
    assert pod_labels == deployment["spec"]["selector"]["matchLabels"]
    operator.stop()
    guarded = OperatorProcess(
        ready,
        tmp_path,
        env={
            "ARCTIC_OPERATOR_NETWORK_POLICY": "true",
            "ARCTIC_OPERATOR_NAMESPACE": OPERATOR_NS,  # the chart's downward-API value
            "ARCTIC_OPERATOR_POD_LABELS": env["ARCTIC_OPERATOR_POD_LABELS"],
        },
    )
    guarded.start()
    try:
        ready.apply(cpu_service("guarded"))
        ready.wait_condition("guarded", "Ready", "True", "ReplicasReady", timeout=90)
        policy = ready.wait_for(
            "the NetworkPolicy", lambda: ready.get("networkpolicy", "guarded"), timeout=30
        )
        owner = ready.get("ais", "guarded") or {}
        assert [o["uid"] for o in policy["metadata"]["ownerReferences"]] == [owner["metadata"]["uid"]]
        spec = policy["spec"]
        assert spec["policyTypes"] == ["Ingress"]
        assert spec["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "guarded"
        serving, admin = spec["ingress"]
        assert serving == {"ports": [{"port": ENGINE_PORT_NAME, "protocol": "TCP"}]}  # from anywhere
        assert admin["ports"] == [{"port": ADMIN_PORT_NAME, "protocol": "TCP"}]
        assert admin["from"] == [
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": OPERATOR_NS}},
                "podSelector": {"matchLabels": pod_labels},
            }
        ]
        # the named ports resolve on the engine pods the policy selects
        engines = ready.get("deployment", "guarded") or {}
        ports = {
            p["name"] for c in engines["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])
        }
        assert {ENGINE_PORT_NAME, ADMIN_PORT_NAME} <= ports
        assert not guarded.forbidden(), guarded.forbidden()
        ready.kubectl("delete", "ais", "guarded", "-n", APPS_NS, "--wait=true")
        ready.wait_for(
            "the NetworkPolicy to be collected", lambda: ready.get("networkpolicy", "guarded") is None
        )
    finally:
        guarded.stop()
        ready.helm("upgrade", RELEASE, chart, "-n", OPERATOR_NS, "--set", "operator.replicas=0")
        operator.start()
