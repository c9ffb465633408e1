"""The control loop end to end with the real kopf operator and the real Kubernetes client against
the emulated API server ("emulated API" test, not Kubernetes e2e).

The engines are fake pods on loopback (tests/operator/fake_engine.py: vLLM 0.26's real /metrics
text, the runtime's admin API). The test plays the kubelet and the ReplicaSet controller: it keeps
one Pod object per Deployment replica (labels of the workload's selector, status.podIP 127.0.0.1,
Ready, the container port "http" = its fake engine's port).

Story: a queue -> the Deployment scales up and status.autoscaling says why; the caps come down
to the size up to which drafting pays and status.pods shows configured = effective per pod; the
load drops while one pod's metrics server is dead -> no scale-down, status says the metrics are
incomplete; the pod comes back (restarted: its startup cap) -> its cap is set again, and replicas
come down only after the scale-down window, one at a time; the spec turns the loop off -> its
status fields go.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import kopf
from kopf.testing import KopfRunner
from kubernetes import client

from arctic_operator.api import GROUP, PLURAL, VERSION
from arctic_operator.control.controller import ControllerConfig
from arctic_operator.control.kube import TICKS, ControlTuning
from arctic_operator.handlers import register
from arctic_operator.plan import labels
from arctic_operator.reconcile import Cluster
from arctic_operator.settings import OperatorSettings
from tests.emulator.server import EmulatedApiServer
from tests.emulator.test_operator import wait_for
from tests.operator.fake_engine import FakeEngine, Load

NS = "default"
NAME = "chat"
SCALE_DOWN_WINDOW = 3.0
BUSY = Load(running=4, waiting=12, accepted_per_draft=0.5)
IDLE = Load(running=1, waiting=0, accepted_per_draft=1.5)

RESOURCE: dict[str, Any] = {
    "apiVersion": f"{GROUP}/{VERSION}",
    "kind": "ArcticInferenceService",
    "metadata": {"name": NAME},
    "spec": {
        "model": {"source": {"hub": "HuggingFaceTB/SmolLM2-135M-Instruct"}},
        "gpusPerPod": 0,
        "speculation": {
            "method": "suffix",
            "softCap": 4,
            "capController": {"enabled": True, "min": 1, "max": 16},
        },
        "autoscaling": {
            "minReplicas": 1,
            "maxReplicas": 3,
            "targets": {"waitingRequestsPerReplica": 2},
            "scaleUp": {"stabilizationWindowSeconds": 1},
            "scaleDown": {"stabilizationWindowSeconds": int(SCALE_DOWN_WINDOW)},
        },
    },
}
TUNING = ControlTuning(
    config=ControllerConfig(window_s=1.0, max_age_s=1.5, scrape_timeout_s=2.0, reapply_grace_s=0.5),
    replica_overrides={"scale_up_cooldown_s": 0.5, "scale_down_cooldown_s": 0.5},
    cap_overrides={"dwell_s": 0.5},
    status_refresh_s=1.0,
)


class Kubelet:
    """Keeps one Ready pod with a fake engine per Deployment replica (index order, highest removed
    first), as the ReplicaSet controller and the kubelet would."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.engines: dict[int, FakeEngine] = {}
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self.loop, name="kubelet", daemon=True)

    def token(self) -> str:
        data: Any = self.core.read_namespaced_secret(f"{NAME}-admin", NS).data
        return base64.b64decode(data["token"]).decode()

    def sync(self) -> None:
        try:
            replicas = self.replicas()
        except client.ApiException as exc:
            if exc.status == 404:
                return
            raise
        for i in range(replicas):
            if i not in self.engines:
                self.engines[i] = FakeEngine(token=self.token(), startup_soft_cap=4, load=BUSY).start()
                self.create_pod(i)
        for i in sorted(self.engines, reverse=True):
            if i >= replicas:
                self.core.delete_namespaced_pod(f"{NAME}-{i}", NS)
                self.engines.pop(i).stop()

    def create_pod(self, i: int) -> None:
        name = f"{NAME}-{i}"
        pod: Any = {
            "metadata": {"name": name, "labels": labels(NAME)},
            "spec": {
                "containers": [
                    {
                        "name": "engine",
                        "image": "fake",
                        "ports": [
                            {"name": "http", "containerPort": self.engines[i].port},
                            {"name": "admin", "containerPort": self.engines[i].admin_port},
                        ],
                    }
                ]
            },
        }
        self.core.create_namespaced_pod(NS, pod)
        self.core.patch_namespaced_pod_status(
            name,
            NS,
            {
                "status": {
                    "phase": "Running",
                    "podIP": "127.0.0.1",
                    "conditions": [{"type": "Ready", "status": "True"}],
                }
            },
        )

    def loop(self) -> None:
        while not self.stop.wait(0.1):
            try:
                self.sync()
            except BaseException as exc:  # surfaced by the test
                self.errors.append(exc)
                return

    def replicas(self) -> int:
        spec: Any = self.apps.read_namespaced_deployment(NAME, NS).spec
        return int(spec.replicas)


@contextmanager
def kubelet(api_client: client.ApiClient) -> Iterator[Kubelet]:
    k = Kubelet(api_client)
    k.thread.start()
    try:
        yield k
    finally:
        k.stop.set()
        k.thread.join(10)
        for engine in k.engines.values():
            engine.stop()
    assert not k.errors, k.errors


@contextmanager
def operator(api: EmulatedApiServer, api_client: client.ApiClient) -> Iterator[KopfRunner]:
    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry)(api.kopf_login)
    settings = OperatorSettings(resync_seconds=1.0, metrics_port=0, scrape_seconds=0.25)
    register(registry, settings, lambda: Cluster(api_client), control_tuning=TUNING)
    with KopfRunner(["run", "--standalone", "--namespace", NS], registry=registry, timeout=60) as runner:
        yield runner
    assert runner.exit_code == 0, runner.output[-3000:]


def test_replicas_and_caps_follow_the_engines_metrics(
    emulated_api: EmulatedApiServer, api_client: client.ApiClient
) -> None:
    custom = client.CustomObjectsApi(api_client)
    core = client.CoreV1Api(api_client)

    def status() -> dict[str, Any]:
        obj: Any = custom.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, NAME)
        return dict(obj.get("status") or {})

    def autoscaling() -> dict[str, Any]:
        return dict(status().get("autoscaling") or {})

    def events(reason: str) -> list[str]:
        return [str(e.message) for e in core.list_namespaced_event(NS).items if e.reason == reason]

    with operator(emulated_api, api_client), kubelet(api_client) as k:
        custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, RESOURCE)

        # 1. a queue of 12 on one replica (target 2 per replica): up to the maximum, 3
        wait_for("scale-up to 3", lambda: k.replicas() == 3, timeout=15)
        up = next(d for d in autoscaling()["lastDecisions"] if d["reason"] == "ScaleUp")
        assert (up["current"], up["desired"]) == (1, 3)
        assert "the load (waiting) needs 6.00 replicas" in up["message"], up
        assert wait_for("a ScaledUp event", lambda: events("ScaledUp"))[0].startswith("replicas 1 -> 3")

        # 2. with 0.5 accepted per 3-token draft, drafting pays up to 10 running (the built-in k=3
        #    curve): each pod's cap comes down from the optimistic 16 to 10 (hard = soft + 1), set
        #    through the admin API; status: configured = effective
        def caps_settled() -> list[dict[str, Any]] | None:
            pods = status().get("pods") or []
            done = len(pods) == 3 and all(
                (p.get("configuredSoftCap"), p.get("effectiveSoftCap"), p.get("effectiveHardCap"))
                == (10, 10, 11)
                for p in pods
            )
            return pods if done else None

        pods = wait_for("caps of 10 on every pod", caps_settled, timeout=15)
        assert [p["name"] for p in pods] == [f"{NAME}-{i}" for i in range(3)]
        assert all(p["metrics"] == "Ok" and p["acceptanceRate"] == 0.167 for p in pods)  # 0.5 of 3
        for engine in k.engines.values():
            assert engine.soft_cap == 10 and engine.hard_cap == 11
            assert engine.puts == [(16, 17), (10, 11)]  # optimistic, then the break-even size
        changes = status()["capController"]["lastChanges"]
        assert {c["reason"] for c in changes} >= {"Lowered"} and all(c["result"] == "Ok" for c in changes)
        assert events("CapChanged")

        # 3. the load drops while chat-2's metrics server is dead: no scale-down, and status says why
        dead = k.engines[2]
        puts_before = list(dead.puts)
        dead.kill()
        for engine in k.engines.values():
            engine.load = IDLE
        incomplete = wait_for(
            "MetricsIncomplete", lambda: (a := autoscaling()).get("reason") == "MetricsIncomplete" and a
        )
        assert incomplete["metricsComplete"] is False and incomplete["observedPods"] == 2
        assert "1 ready pods have no metrics" in incomplete["message"]
        time.sleep(SCALE_DOWN_WINDOW + 1.0)
        assert k.replicas() == 3 and autoscaling()["reason"] == "MetricsIncomplete"
        pod2 = next(p for p in status()["pods"] if p["name"] == f"{NAME}-2")
        assert pod2["metrics"] == "Error" and pod2["metricsError"].startswith("cannot connect to")
        assert pod2["capReason"] == "MetricsIncomplete" and dead.puts == puts_before
        assert any(f"pod {NAME}-2: cannot connect" in m for m in events("MetricsUnavailable"))

        # 4. chat-2 is back (restarted with its startup cap): a cap is set again; with every pod
        #    observed and the load low, replicas come down after the scale-down window, one at a time
        back = time.monotonic()
        dead.start()  # with the spec's startup cap (soft 4, no hard cap)
        # set again: as it was (CapReapplied) or already raised for the low load (CapChanged)
        wait_for("the cap set again", lambda: len(dead.puts) > len(puts_before) and dead.hard_cap is not None)
        wait_for(
            "CapReapplied, or a new cap",
            lambda: (dead.soft_cap, dead.hard_cap) != puts_before[-1] or events("CapReapplied"),
            timeout=10,
        )
        wait_for("the first scale-down", lambda: k.replicas() < 3, timeout=15)
        assert time.monotonic() - back >= SCALE_DOWN_WINDOW - 0.5
        wait_for("scale-down to 1", lambda: k.replicas() == 1, timeout=15)
        downs = [d for d in autoscaling()["lastDecisions"] if d["reason"] == "ScaleDown"]
        assert [(d["current"], d["desired"]) for d in downs] == [(3, 2), (2, 1)]
        assert f"for {SCALE_DOWN_WINDOW:g}s" in downs[0]["message"]
        wait_for("status.pods to follow", lambda: len(status().get("pods") or []) == 1)

        # 5. the spec turns the loop off: its status fields go, the replica count stays as it was
        custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            NS,
            PLURAL,
            NAME,
            {"spec": {"autoscaling": None, "speculation": {"capController": {"enabled": False}}}},
        )
        wait_for(
            "the loop's status to go", lambda: not {"autoscaling", "capController", "pods"} & status().keys()
        )


def ticks() -> float:
    """Control passes so far in this process, any result (``control.kube.TICKS``)."""
    return float(sum(TICKS.labels(result=r)._value.get() for r in ("ok", "skipped", "error")))


def test_the_control_loop_starts_with_the_resource_and_stops_when_it_is_deleted(
    emulated_api: EmulatedApiServer, api_client: client.ApiClient
) -> None:
    """The control loop is the operator's own task (no kopf daemon): it starts when a resource with
    autoscaling appears, and no pass runs after the resource is deleted."""
    custom = client.CustomObjectsApi(api_client)
    with operator(emulated_api, api_client), kubelet(api_client):
        time.sleep(1.0)
        before = ticks()
        time.sleep(0.75)  # three intervals without a resource: no pass
        assert ticks() == before
        custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, RESOURCE)
        wait_for("the loop's first passes", lambda: ticks() >= before + 2, timeout=15)
        wait_for("status.autoscaling", lambda: "autoscaling" in (_status(custom) or {}), timeout=15)
        custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, NAME)
        wait_for("the resource to go", lambda: _status(custom) is None, timeout=15)
        time.sleep(0.5)  # a pass in flight at the delete may end
        after = ticks()
        time.sleep(1.0)  # four intervals
        assert ticks() == after


def _status(custom: client.CustomObjectsApi) -> dict[str, Any] | None:
    """The resource's status ({} without one); None once it is gone."""
    try:
        obj: Any = custom.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, NAME)
    except client.exceptions.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return dict(obj.get("status") or {})
