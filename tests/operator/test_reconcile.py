"""``reconcile`` against a recording in-memory API: what it reads and writes per pass.

The request budget is what makes the operator scale (issue 15): a settled resource costs one round
of reads and a dry run per applied child, and writes nothing; a drifted child is the only write.
Kubernetes semantics (server-side apply, field removal, rejections) are the real control plane's
tier (tests/cluster); this fake only stores what it is given.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

from arctic_operator.reconcile import Cluster, Outcome, Settled, reconcile, same_object
from arctic_operator.settings import OperatorSettings
from tests.operator.status_checks import assert_typed_status

SAMPLE = Path(__file__).resolve().parents[2] / "docs" / "samples" / "smollm2-cpu.yaml"
NOW = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)
UID = "uid-1"


class RecordingCluster(Cluster):
    """Objects by (kind, name); every request recorded as (verb, kind, name)."""

    def __init__(self) -> None:  # no API client: nothing here goes over the network
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.requests: list[tuple[str, str, str]] = []
        self.rv = 0

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
        return [fn(x) for x in items]

    def _store(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.rv += 1
        stored = copy.deepcopy(obj)
        stored["metadata"]["resourceVersion"] = str(self.rv)
        self.objects[(obj["kind"], obj["metadata"]["name"])] = stored
        return copy.deepcopy(stored)

    def get(self, api_version: str, kind: str, name: str, namespace: str | None) -> dict[str, Any] | None:
        self.requests.append(("get", kind, name))
        found = self.objects.get((kind, name))
        return copy.deepcopy(found) if found else None

    def list(self, api_version: str, kind: str, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        self.requests.append(("list", kind, label_selector.split("instance=")[1].split(",")[0]))
        wanted = dict(pair.split("=") for pair in label_selector.split(","))
        return [
            {k: v for k, v in copy.deepcopy(o).items() if k not in ("apiVersion", "kind")}
            for (k, _), o in self.objects.items()
            if k == kind and wanted.items() <= (o["metadata"].get("labels") or {}).items()
        ]

    def create(self, obj: Any) -> bool:
        self.requests.append(("create", obj["kind"], obj["metadata"]["name"]))
        if (obj["kind"], obj["metadata"]["name"]) in self.objects:
            return False
        self._store(obj)
        return True

    def apply(self, obj: Any, *, dry_run: bool = False) -> dict[str, Any]:
        key = (obj["kind"], obj["metadata"]["name"])
        self.requests.append(("dry-run" if dry_run else "apply", *key))
        before = self.objects.get(key)
        would_be = copy.deepcopy(obj)
        if before is not None:
            would_be["metadata"]["resourceVersion"] = before["metadata"]["resourceVersion"]
            if "status" in before:
                would_be["status"] = before["status"]
            if would_be == before:
                return copy.deepcopy(before)  # a no-op is not stored
        return would_be if dry_run else self._store(would_be)

    def delete(self, api_version: str, kind: str, name: str, namespace: str) -> None:
        self.requests.append(("delete", kind, name))
        self.objects.pop((kind, name), None)


def body() -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load(SAMPLE.read_text())
    obj["metadata"] = {"name": "svc", "namespace": "models", "uid": UID, "generation": 1}
    return obj


def run(cluster: RecordingCluster, resource: dict[str, Any], settled: Settled | None = None) -> Outcome:
    cluster.requests.clear()
    outcome = reconcile(resource, cluster, OperatorSettings(), NOW, settled)
    resource["status"] = assert_typed_status(outcome.status)
    return outcome


def writes(cluster: RecordingCluster) -> list[tuple[str, str, str]]:
    return [r for r in cluster.requests if r[0] in ("create", "apply", "delete")]


READS = [
    ("get", "Secret", "svc-admin"),
    ("list", "Pod", "svc"),
    ("list", "Deployment", "svc"),
    ("list", "StatefulSet", "svc"),
    ("list", "Service", "svc"),
    ("list", "PodDisruptionBudget", "svc"),
]


def test_first_pass_creates_the_children_after_checking_them() -> None:
    cluster, resource = RecordingCluster(), body()
    outcome = run(cluster, resource)
    assert cluster.requests == [
        *READS,
        ("get", "Deployment", "svc"),  # not listed: is its name taken by someone else's object?
        ("get", "Service", "svc"),
        ("create", "Secret", "svc-admin"),
        ("dry-run", "Deployment", "svc"),
        ("dry-run", "Service", "svc"),
        ("apply", "Deployment", "svc"),
        ("apply", "Service", "svc"),
    ]
    assert outcome.applied == ["Secret/svc-admin: created", "Deployment/svc: created", "Service/svc: created"]
    assert ("Normal", "Created", "Secret/svc-admin, Deployment/svc, Service/svc") in outcome.events


def test_a_settled_resource_costs_one_round_of_reads_and_dry_runs_and_writes_nothing() -> None:
    cluster, resource = RecordingCluster(), body()
    run(cluster, resource)
    cluster.objects[("Deployment", "svc")]["status"] = {
        "replicas": 1,
        "readyReplicas": 1,
        "updatedReplicas": 1,
    }
    outcome = run(cluster, resource)
    assert cluster.requests == [*READS, ("dry-run", "Deployment", "svc"), ("dry-run", "Service", "svc")]
    assert outcome.applied == [
        "Secret/svc-admin: unchanged",
        "Deployment/svc: unchanged",
        "Service/svc: unchanged",
    ]
    assert outcome.events == []
    ready = next(c for c in outcome.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "ReplicasReady")  # from the listed Deployment


def test_a_drifted_child_is_the_only_write() -> None:
    cluster, resource = RecordingCluster(), body()
    run(cluster, resource)
    container = cluster.objects[("Deployment", "svc")]["spec"]["template"]["spec"]["containers"][0]
    container["image"] = "edited/by-hand:1"
    outcome = run(cluster, resource)
    assert writes(cluster) == [("apply", "Deployment", "svc")]
    assert "Deployment/svc: updated" in outcome.applied
    assert ("Normal", "Updated", "Deployment/svc") in outcome.events
    put_back = cluster.objects[("Deployment", "svc")]["spec"]["template"]["spec"]["containers"][0]
    assert put_back["image"] != "edited/by-hand:1"


def test_children_known_settled_need_no_dry_run_until_they_change() -> None:
    cluster, resource, settled = RecordingCluster(), body(), Settled()
    run(cluster, resource, settled)
    outcome = run(cluster, resource, settled)
    assert cluster.requests == READS  # nothing changed on either side since the last apply
    assert outcome.applied == [
        "Secret/svc-admin: unchanged",
        "Deployment/svc: unchanged",
        "Service/svc: unchanged",
    ]
    edited = cluster.objects[("Deployment", "svc")]
    edited["spec"]["template"]["spec"]["containers"][0]["image"] = "edited/by-hand:1"
    cluster._store(edited)  # a hand edit: a new resourceVersion
    outcome = run(cluster, resource, settled)
    assert cluster.requests == [*READS, ("dry-run", "Deployment", "svc"), ("apply", "Deployment", "svc")]
    assert "Deployment/svc: updated" in outcome.applied
    resource["spec"]["service"] = {"port": 9000}  # a changed spec: a changed manifest
    run(cluster, resource, settled)
    assert ("dry-run", "Service", "svc") in cluster.requests and (
        "apply",
        "Service",
        "svc",
    ) in cluster.requests
    run(cluster, resource, settled)
    assert cluster.requests == READS


def test_a_name_taken_by_someone_else_changes_nothing() -> None:
    cluster, resource = RecordingCluster(), body()
    cluster.objects[("Service", "svc")] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "svc", "namespace": "models", "resourceVersion": "1"},
    }
    outcome = run(cluster, resource)
    assert writes(cluster) == []  # not even the admin Secret
    degraded = next(c for c in outcome.status["conditions"] if c["type"] == "Degraded")
    assert (degraded["reason"], degraded["message"]) == (
        "NameConflict",
        "Service/svc exists and is not owned by this ArcticInferenceService; "
        "rename or delete it (nothing was changed)",
    )


def test_a_dropped_child_is_deleted() -> None:
    cluster, resource = RecordingCluster(), body()
    resource["spec"]["replicas"] = 2  # two replicas get a PodDisruptionBudget
    run(cluster, resource)
    assert ("PodDisruptionBudget", "svc") in cluster.objects
    resource["spec"]["replicas"] = 1
    outcome = run(cluster, resource)
    assert ("delete", "PodDisruptionBudget", "svc") in writes(cluster)
    assert "PodDisruptionBudget/svc: deleted" in outcome.applied


def test_same_object_ignores_only_status_and_resource_version() -> None:
    current: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "a", "resourceVersion": "7", "managedFields": [{"manager": "arctic"}]},
        "spec": {"ports": [{"port": 8000}]},
        "status": {"loadBalancer": {}},
    }
    listed = {k: v for k, v in current.items() if k not in ("apiVersion", "kind")}
    assert same_object(listed, {**current, "metadata": {**current["metadata"], "resourceVersion": "9"}})
    assert same_object(current, {**current, "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}})
    assert not same_object(current, {**current, "spec": {"ports": [{"port": 8001}]}})
    taken_back = [{"manager": "arctic"}, {"manager": "kubectl-edit"}]
    assert not same_object(
        current, {**current, "metadata": {**current["metadata"], "managedFields": taken_back}}
    )
