"""The real kopf operator with the real Kubernetes client against the emulated API server
("emulated API" tests, not Kubernetes e2e): create -> objects appear and status is written;
drift -> corrected; update -> rolled; unsupported spec -> Degraded with the field; delete -> cleaned;
restart -> no duplicates."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import kopf
import yaml
from kopf.testing import KopfRunner
from kubernetes import client

from arctic_operator.api import GROUP, PLURAL, VERSION
from arctic_operator.handlers import register
from arctic_operator.reconcile import Cluster
from arctic_operator.settings import OperatorSettings
from tests.emulator.server import EmulatedApiServer

SAMPLE = Path(__file__).resolve().parents[2] / "docs" / "samples" / "smollm2-cpu.yaml"
NS = "default"


def wait_for(what: str, check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@contextmanager
def operator(
    api: EmulatedApiServer, api_client: client.ApiClient, resync_seconds: float = 1.0
) -> Iterator[KopfRunner]:
    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry)(api.kopf_login)
    settings = OperatorSettings(resync_seconds=resync_seconds, metrics_port=0)
    register(registry, settings, lambda: Cluster(api_client))
    with KopfRunner(["run", "--standalone", "--namespace", NS], registry=registry, timeout=60) as runner:
        yield runner
    assert runner.exit_code == 0, runner.output[-3000:]


def names(api_client: client.ApiClient) -> dict[str, list[str]]:
    core, apps, policy = (
        client.CoreV1Api(api_client),
        client.AppsV1Api(api_client),
        client.PolicyV1Api(api_client),
    )
    return {
        "deployments": _names(apps.list_namespaced_deployment(NS)),
        "services": _names(core.list_namespaced_service(NS)),
        "secrets": _names(core.list_namespaced_secret(NS)),
        "pdbs": _names(policy.list_namespaced_pod_disruption_budget(NS)),
    }


def _names(listing: Any) -> list[str]:
    return [str(item.metadata.name) for item in listing.items]


def _image(deployment: Any) -> str:
    return str(deployment.spec.template.spec.containers[0].image)


def test_operator_lifecycle(emulated_api: EmulatedApiServer, api_client: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(api_client)
    apps = client.AppsV1Api(api_client)
    body = yaml.safe_load(SAMPLE.read_text())

    def get_cr() -> dict[str, Any]:
        obj: Any = custom.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "smollm2-cpu")
        return dict(obj)

    def condition(type_: str) -> dict[str, Any] | None:
        for c in (get_cr().get("status") or {}).get("conditions") or []:
            if c["type"] == type_:
                return dict(c)
        return None

    with operator(emulated_api, api_client):
        custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)
        deployment = wait_for("the Deployment", lambda: apps.read_namespaced_deployment("smollm2-cpu", NS))
        args = deployment.spec.template.spec.containers[0].args
        assert args[args.index("--model") + 1] == "HuggingFaceTB/SmolLM2-135M-Instruct"
        owner = deployment.metadata.owner_references[0]
        assert owner.kind == "ArcticInferenceService" and owner.controller is True
        assert names(api_client) == {
            "deployments": ["smollm2-cpu"],
            "services": ["smollm2-cpu"],
            "secrets": ["smollm2-cpu-admin"],
            "pdbs": [],
        }
        progressing = wait_for("status", lambda: condition("Progressing"))
        assert progressing["status"] == "True"  # no pods run in the emulator: the rollout never completes
        status = get_cr()["status"]
        assert (
            status["observedGeneration"] == 1
            and status["endpoint"] == "http://smollm2-cpu.default.svc:8000/v1"
        )
        assert status["selector"].startswith("app.kubernetes.io/component=engine")

        # drift: a hand edit of the Deployment is put back by the next resync
        apps.patch_namespaced_deployment(
            "smollm2-cpu",
            NS,
            {"spec": {"template": {"spec": {"containers": [{"name": "engine", "image": "evil"}]}}}},
        )
        wait_for(
            "drift to be corrected",
            lambda: _image(apps.read_namespaced_deployment("smollm2-cpu", NS)) != "evil",
        )

        # an engine pod that keeps crashing: Degraded names the pod and how it ended, one Warning event;
        # the pod gone -> Degraded clears (the test plays the kubelet: the emulator runs no pods)
        core = client.CoreV1Api(api_client)
        selector = deployment.spec.selector.match_labels
        crashing: Any = {
            "metadata": {"name": "smollm2-cpu-6d4-x1", "labels": selector},
            "spec": {"containers": [{"name": "engine", "image": "runtime"}]},
        }
        core.create_namespaced_pod(NS, crashing)
        core.patch_namespaced_pod_status(
            "smollm2-cpu-6d4-x1",
            NS,
            {
                "status": {
                    "phase": "Running",
                    "containerStatuses": [
                        {
                            "name": "engine",
                            "image": "runtime",
                            "imageID": "",
                            "ready": False,
                            "restartCount": 5,
                            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                            "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}},
                        }
                    ],
                }
            },
        )
        crash = wait_for(
            "Degraded: crash loop",
            lambda: (c := condition("Degraded")) and c["reason"] == "EngineCrashLooping" and c,
        )
        assert crash["status"] == "True" and "smollm2-cpu-6d4-x1" in crash["message"]
        assert "5 restarts" in crash["message"] and "OOMKilled" in crash["message"]
        wait_for(
            "a Warning event",
            lambda: [e for e in core.list_namespaced_event(NS).items if e.reason == "EngineCrashLooping"],
        )
        time.sleep(2.5)  # two more resyncs: still one event
        crash_events = [e for e in core.list_namespaced_event(NS).items if e.reason == "EngineCrashLooping"]
        assert len(crash_events) == 1 and crash_events[0].type == "Warning"
        core.delete_namespaced_pod("smollm2-cpu-6d4-x1", NS)
        wait_for("Degraded to clear", lambda: (c := condition("Degraded")) and c["status"] == "False")

        # update: two replicas -> rolled out to the Deployment, and a PDB appears
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, NS, PLURAL, "smollm2-cpu", {"spec": {"replicas": 2}}
        )
        wait_for("2 replicas", lambda: apps.read_namespaced_deployment("smollm2-cpu", NS).spec.replicas == 2)
        wait_for("the PDB", lambda: names(api_client)["pdbs"] == ["smollm2-cpu"])

        # a spec the schema accepts but this runtime cannot serve: Degraded, naming the field; pods untouched
        https_source = {
            "source": {"hub": None, "uri": "https://models.example.com/smollm2"},
            "revision": None,
        }
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, NS, PLURAL, "smollm2-cpu", {"spec": {"model": https_source}}
        )
        degraded = wait_for("Degraded", lambda: (c := condition("Degraded")) and c["status"] == "True" and c)
        assert degraded["reason"] == "InvalidSpec" and degraded["message"].startswith(
            "spec.model.source.uri:"
        )
        assert apps.read_namespaced_deployment("smollm2-cpu", NS).spec.replicas == 2

    from prometheus_client import REGISTRY

    assert (
        REGISTRY.get_sample_value("arctic_operator_reconciles_total", {"result": "invalid_spec"}) or 0
    ) >= 1
    assert (
        REGISTRY.get_sample_value("arctic_operator_objects_applied_total", {"action": "created"}) or 0
    ) >= 3

    # a restarted operator finds everything in place and creates nothing twice
    before = names(api_client)
    with operator(emulated_api, api_client):
        hub_source = {
            "source": {"uri": None, "hub": "HuggingFaceTB/SmolLM2-135M-Instruct"},
            "revision": "main",
        }
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, NS, PLURAL, "smollm2-cpu", {"spec": {"model": hub_source}}
        )
        wait_for("Degraded to clear", lambda: (c := condition("Degraded")) and c["status"] == "False")
        assert names(api_client) == before

        custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "smollm2-cpu")
        wait_for(
            "children to be deleted",
            lambda: names(api_client) == {"deployments": [], "services": [], "secrets": [], "pdbs": []},
        )


def test_resyncs_do_not_flood_the_events(
    emulated_api: EmulatedApiServer, api_client: client.ApiClient
) -> None:
    """A resource left alone gets its Created event, not one event per resync."""
    custom = client.CustomObjectsApi(api_client)
    core = client.CoreV1Api(api_client)
    body = yaml.safe_load(SAMPLE.read_text())
    body["metadata"]["name"] = "quiet"
    with operator(emulated_api, api_client):
        custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)
        wait_for(
            "the Created event",
            lambda: [e for e in core.list_namespaced_event(NS).items if e.reason == "Created"],
        )
        time.sleep(4)  # four resyncs (resync_seconds=1)
        reasons = [
            e.reason for e in core.list_namespaced_event(NS).items if e.involved_object.name == "quiet"
        ]
        assert reasons.count("Created") == 1, reasons
        assert len(reasons) <= 2, reasons  # Created (+ a status-change Updated at most); no per-resync events
        custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "quiet")


def test_a_resource_is_ready_when_its_workload_is_not_at_the_next_resync(
    emulated_api: EmulatedApiServer, api_client: client.ApiClient
) -> None:
    """The workload's ready replicas changing (its pods became ready) brings a pass over its
    resource at once: Ready long before a resync (here 10 minutes away)."""
    custom = client.CustomObjectsApi(api_client)
    apps = client.AppsV1Api(api_client)
    body = yaml.safe_load(SAMPLE.read_text())
    body["metadata"]["name"] = "eager"

    def ready() -> str | None:
        obj: Any = custom.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "eager")
        conditions = (obj.get("status") or {}).get("conditions") or []
        return next((c["status"] for c in conditions if c["type"] == "Ready"), None)

    with operator(emulated_api, api_client, resync_seconds=600.0):
        custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)
        wait_for("the first pass's status", ready)
        assert ready() == "False"
        time.sleep(8)  # past the timer's first pass (once the resource is 5 s idle): the next in 10 min
        # the test plays the workload controller: one replica, up to date and ready
        apps.patch_namespaced_deployment_status(
            "eager", NS, {"status": {"replicas": 1, "updatedReplicas": 1, "readyReplicas": 1}}
        )
        wait_for("Ready from the workload's event", lambda: ready() == "True", timeout=10.0)
        status: Any = custom.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "eager")
        assert status["status"]["readyReplicas"] == 1
        custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "eager")


def test_shift_parallel_sample_is_served(
    emulated_api: EmulatedApiServer, api_client: client.ApiClient
) -> None:
    """The Shift Parallelism sample, applied as written: a StatefulSet of 8-GPU pods whose engine runs
    tensor 2 x ulysses 4 with shift, and no Degraded condition (it was refused before the runtime
    had Ulysses)."""
    custom = client.CustomObjectsApi(api_client)
    apps = client.AppsV1Api(api_client)
    body = yaml.safe_load((SAMPLE.parent / "llama-70b-shift-parallel.yaml").read_text())
    name = body["metadata"]["name"]

    def conditions() -> dict[str, dict[str, Any]]:
        obj: Any = custom.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name)
        return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}

    with operator(emulated_api, api_client):
        custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)
        sts = wait_for("the StatefulSet", lambda: apps.read_namespaced_stateful_set(name, NS))
        engine = sts.spec.template.spec.containers[0]
        args = engine.args
        assert args[args.index("--tensor-parallel-size") + 1] == "2"
        assert (
            '"parallel":{"shift":true,"shift_threshold":512,"ulysses":4}'
            in args[args.index("--additional-config") + 1]
        )
        assert engine.resources.limits["nvidia.com/gpu"] == "8"
        assert engine.startup_probe.failure_threshold == 720
        progressing = wait_for("status", lambda: conditions().get("Progressing"))
        assert progressing["status"] == "True"
        assert conditions()["Degraded"]["status"] == "False"
        custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name)
        wait_for("the StatefulSet to go", lambda: not apps.list_namespaced_stateful_set(NS).items)


def test_names_taken_by_others_are_conflicts_and_dropped_children_are_deleted(
    emulated_api: EmulatedApiServer, api_client: client.ApiClient
) -> None:
    custom, apps, core = (
        client.CustomObjectsApi(api_client),
        client.AppsV1Api(api_client),
        client.CoreV1Api(api_client),
    )
    body = yaml.safe_load(SAMPLE.read_text())
    users_secret: Any = {"metadata": {"name": "smollm2-cpu-admin"}, "stringData": {"token": "mine"}}
    core.create_namespaced_secret(NS, users_secret)

    def degraded() -> dict[str, Any]:
        obj: Any = custom.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "smollm2-cpu")
        found = [c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == "Degraded"]
        return dict(found[0]) if found else {}

    with operator(emulated_api, api_client):
        custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)
        conflict = wait_for("NameConflict", lambda: degraded().get("reason") == "NameConflict" and degraded())
        assert "Secret/smollm2-cpu-admin exists and is not owned" in conflict["message"]
        assert names(api_client)["deployments"] == []  # nothing mounts the user's Secret
        kept: Any = core.read_namespaced_secret("smollm2-cpu-admin", NS)
        assert kept.metadata.owner_references is None
        # the user removes their Secret: the operator makes its own and the engines
        core.delete_namespaced_secret("smollm2-cpu-admin", NS)
        wait_for("the Deployment", lambda: apps.read_namespaced_deployment("smollm2-cpu", NS))
        # emptyDir -> PVC cache: the StatefulSet replaces the Deployment, which is deleted
        patch = {"spec": {"modelCache": {"volume": "pvc", "size": "2Gi"}}}
        custom.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "smollm2-cpu", patch)
        wait_for("the StatefulSet", lambda: apps.read_namespaced_stateful_set("smollm2-cpu", NS))
        wait_for("the Deployment deleted", lambda: names(api_client)["deployments"] == [])
