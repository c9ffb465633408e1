"""The watch-based cache of children (``arctic_operator.cache``): what it keeps of an object, that a
pass decides the same from it as from the whole object, the one read a settled and ready resource
then costs (its pods are listed only while its workload is not all ready), and that a cache behind
the API server never makes a pass take over or delete an object that is not the resource's."""

from __future__ import annotations

import copy
from collections import defaultdict
from typing import Any

from arctic_operator.cache import IndexCache, child_summary, index_child, index_key
from arctic_operator.plan import Plan, labels
from arctic_operator.reconcile import (
    FIELD_MANAGER,
    SUMMARY,
    Settled,
    content_digest,
    manifest_digest,
    reconcile,
    same_object,
)
from arctic_operator.settings import OperatorSettings
from arctic_operator.status import all_replicas_ready, compute_status
from tests.operator.status_checks import assert_typed_status
from tests.operator.test_reconcile import CHECKS, CREATES, NOW, UID, RecordingCluster, body, degraded

OWNER = {"apiVersion": "serving.arctic-serve.dev/v1alpha1", "kind": "ArcticInferenceService"}


def deployment() -> dict[str, Any]:
    """A Deployment as the API server has it: spec, managed fields, status and all."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "svc",
            "namespace": "models",
            "uid": "d-1",
            "resourceVersion": "42",
            "generation": 3,
            "labels": {**labels("svc"), "team": "a"},
            "annotations": {"deployment.kubernetes.io/revision": "2"},
            "ownerReferences": [
                {**OWNER, "name": "svc", "uid": UID, "controller": True, "blockOwnerDeletion": True},
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "cm-1"},
            ],
            "managedFields": [
                {"manager": FIELD_MANAGER, "operation": "Apply", "fieldsV1": {"f:spec": {}}},
                {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status"},
            ],
        },
        "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "engine", "image": "x"}]}}},
        "status": {
            "observedGeneration": 3,
            "replicas": 2,
            "readyReplicas": 1,
            "updatedReplicas": 2,
            "availableReplicas": 1,
            "conditions": [
                {
                    "type": "Progressing",
                    "status": "True",
                    "reason": "NewReplicaSetAvailable",
                    "message": "done",
                    "lastUpdateTime": "2026-12-01T00:00:00Z",
                    "lastTransitionTime": "2026-12-01T00:00:00Z",
                }
            ],
        },
    }


def crashing_pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "svc-7c9-abcde", "namespace": "models", "labels": labels("svc"), "uid": "p-1"},
        "spec": {"containers": [{"name": "engine", "image": "x", "env": [{"name": "A", "value": "1"}]}]},
        "status": {
            "phase": "Running",
            "podIP": "10.0.0.7",
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "ContainersNotReady"},
                {"type": "PodScheduled", "status": "True"},
            ],
            "containerStatuses": [
                {
                    "name": "engine",
                    "image": "x",
                    "imageID": "sha256:abc",
                    "restartCount": 4,
                    "ready": False,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 1m20s"}},
                    "lastState": {
                        "terminated": {
                            "reason": "OOMKilled",
                            "exitCode": 137,
                            "startedAt": "2026-12-01T00:00:00Z",
                            "finishedAt": "2026-12-01T00:01:00Z",
                        }
                    },
                }
            ],
        },
    }


def test_a_child_is_kept_as_what_a_pass_reads_of_it_and_two_digests() -> None:
    full = deployment()
    summary = child_summary(full)
    assert {k: v for k, v in summary.items() if k != SUMMARY} == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "svc",
            "namespace": "models",
            "uid": "d-1",
            "resourceVersion": "42",
            "ownerReferences": [{"uid": UID, "controller": True}],
        },
        "spec": {"replicas": 2},
        "status": {
            "replicas": 2,
            "readyReplicas": 1,
            "updatedReplicas": 2,
        },  # no condition: compute_status reads only a stuck rollout's and a ReplicaFailure
    }
    stuck = deployment()
    stuck["status"]["conditions"] += [
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "late"},
        {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": "forbidden"},
        {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable", "message": "no"},
    ]
    assert child_summary(stuck)["status"]["conditions"] == [
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "late"},
        {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": "forbidden"},
    ]
    # a pass decides from the summary as from the whole object
    assert content_digest(summary) == content_digest(full)
    answer = copy.deepcopy(full)
    answer["status"] = {}  # a dry run's answer: the status is not compared
    assert same_object(summary, answer) and same_object(full, answer)
    answer["spec"]["replicas"] = 3
    assert not same_object(summary, answer) and not same_object(full, answer)
    # a Service has no spec or status in its summary
    service = {**copy.deepcopy(full), "apiVersion": "v1", "kind": "Service", "spec": {"ports": []}}
    assert set(child_summary(service)) == {"apiVersion", "kind", "metadata", SUMMARY}


def test_the_status_is_the_same_from_a_summary() -> None:
    plan = Plan(replicas=2, selector=labels("svc"))

    def status(workload: dict[str, Any]) -> dict[str, Any]:
        return compute_status(
            name="svc",
            namespace="models",
            generation=3,
            now=NOW,
            previous=None,
            errors=None,
            plan=plan,
            workload=workload,
            service_port=8000,
            pods=[crashing_pod()],
        )

    full = deployment()
    from_summary = status(child_summary(full)["status"])
    assert from_summary == status(full["status"])
    assert degraded_reason(from_summary) == "EngineCrashLooping"


def degraded_reason(status: dict[str, Any]) -> str:
    return str(next(c for c in status["conditions"] if c["type"] == "Degraded")["reason"])


def test_a_workload_is_all_ready_with_every_replica_it_asks_for_ready_and_updated() -> None:
    full = deployment()  # 2 asked for, 2 running the current template, 1 ready
    assert not all_replicas_ready(full) and not all_replicas_ready(child_summary(full))
    full["status"]["readyReplicas"] = 2
    assert all_replicas_ready(full) and all_replicas_ready(child_summary(full))
    for field, value in (("updatedReplicas", 1), ("replicas", 3)):  # a rollout, a surplus pod
        other = copy.deepcopy(full)
        other["status"][field] = value
        assert not all_replicas_ready(other)
    scaling = copy.deepcopy(full)
    scaling["spec"]["replicas"] = 3
    assert not all_replicas_ready(scaling)
    zero = {"spec": {"replicas": 0}, "status": {"observedGeneration": 4}}  # no counts: all zero
    assert all_replicas_ready(zero)
    assert not all_replicas_ready({"status": {"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1}})


def test_only_objects_with_the_operators_labels_are_indexed_by_namespace_and_resource() -> None:
    assert index_key(deployment()) == ("models", "svc")
    assert set(index_child(deployment())) == {("models", "svc")}
    someone_elses = deployment()
    someone_elses["metadata"]["labels"] = {"app.kubernetes.io/instance": "svc"}  # not managed by us
    assert index_child(someone_elses) == {}


def cache_of(cluster: RecordingCluster) -> IndexCache:
    """The cache as the watches would have it now (index functions over the fake's objects)."""
    children: dict[str, dict[Any, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for obj in cluster.objects.values():
        obj = {**obj, "metadata": {**obj["metadata"], "namespace": "models"}}
        for key, value in index_child(obj).items():
            children[obj["kind"]][key].append(value)
    return IndexCache(children)


def run(cluster: RecordingCluster, resource: dict[str, Any], settled: Settled, cache: IndexCache) -> Any:
    cluster.requests.clear()
    cluster.rounds.clear()
    outcome = reconcile(resource, cluster, OperatorSettings(), NOW, settled, cache)
    resource["status"] = assert_typed_status(outcome.status)
    return outcome


def ready(cluster: RecordingCluster, replicas: int = 1) -> None:
    """The workload's controller reports every replica ready (the fake has no controller)."""
    counts = {"replicas": replicas, "readyReplicas": replicas, "updatedReplicas": replicas}
    cluster.objects[("Deployment", "svc")]["status"] = counts


def test_with_the_cache_a_settled_ready_resource_reads_only_its_secret() -> None:
    cluster, resource, settled = RecordingCluster(), body(), Settled()
    run(cluster, resource, settled, cache_of(cluster))
    # a first pass: the Secret read, the checks with it, then the writes; no listing (no workload
    # yet: no pods to read)
    pods = ("list", "Pod", "svc")
    assert cluster.rounds == [[("cached get", "Secret", "svc-admin"), *CHECKS], CREATES]
    # settled, its replica not ready yet: the pods are read for their failures
    outcome = run(cluster, resource, settled, cache_of(cluster))
    assert cluster.rounds == [[("cached get", "Secret", "svc-admin"), pods]]
    ready(cluster)
    outcome = run(cluster, resource, settled, cache_of(cluster))
    assert cluster.rounds == [[("cached get", "Secret", "svc-admin")]]
    assert all(a.endswith("unchanged") for a in outcome.applied)
    # a hand edit of the operator's field shows in the cached digest: one dry run, one apply (and
    # the pods are read: 5 replicas asked for, 1 ready)
    cluster.edit("Deployment", "svc", lambda d: d["spec"].update(replicas=5), ours=True)
    outcome = run(cluster, resource, settled, cache_of(cluster))
    assert cluster.rounds == [
        [("cached get", "Secret", "svc-admin"), pods],
        [("dry-run", "Deployment", "svc")],
        [("apply", "Deployment", "svc")],
    ]
    assert "Deployment/svc: updated" in outcome.applied


def test_a_cached_child_replaced_meanwhile_by_someone_else_is_a_name_conflict() -> None:
    cluster, resource, settled = RecordingCluster(), body(), Settled()
    run(cluster, resource, settled, cache_of(cluster))
    stale = cache_of(cluster)  # the watch has not seen what follows
    # the Service is deleted and made again by someone else: another object, not the resource's
    replaced = copy.deepcopy(cluster.objects[("Service", "svc")])
    replaced["metadata"].update(uid="someone-elses", ownerReferences=[])
    cluster.objects[("Service", "svc")] = replaced
    settled.clear()  # a first pass (after a restart): every child dry-run
    outcome = run(cluster, resource, settled, stale)
    assert degraded(outcome)[0] == "NameConflict"
    assert ("get", "Service", "svc") in cluster.requests  # read by name: its dry run showed another uid
    assert not [r for r in cluster.requests if r[0] in ("create", "apply", "delete")]
    assert cluster.objects[("Service", "svc")] == replaced


def test_a_stale_cache_never_deletes_an_object_that_is_no_longer_the_resources() -> None:
    cluster, resource, settled = RecordingCluster(), body(), Settled()
    resource["spec"]["replicas"] = 2  # two replicas get a PodDisruptionBudget
    run(cluster, resource, settled, cache_of(cluster))
    stale = cache_of(cluster)
    # someone releases the PDB (takes its owner reference away) before the watch shows it
    cluster.objects[("PodDisruptionBudget", "svc")]["metadata"]["ownerReferences"] = []
    resource["spec"]["replicas"] = 1  # the plan drops the PDB
    outcome = run(cluster, resource, settled, stale)
    assert ("get", "PodDisruptionBudget", "svc") in cluster.requests
    assert ("delete", "PodDisruptionBudget", "svc") not in cluster.requests
    assert ("PodDisruptionBudget", "svc") in cluster.objects
    assert not [a for a in outcome.applied if a.endswith("deleted")]
    # still the resource's: deleted, as read (preconditions)
    cluster.objects[("PodDisruptionBudget", "svc")]["metadata"]["ownerReferences"] = [
        {"uid": UID, "controller": True}
    ]
    resource["spec"]["replicas"] = 2
    run(cluster, resource, settled, cache_of(cluster))
    resource["spec"]["replicas"] = 1
    outcome = run(cluster, resource, settled, cache_of(cluster))
    assert "PodDisruptionBudget/svc: deleted" in outcome.applied
    assert ("PodDisruptionBudget", "svc") not in cluster.objects


def test_the_index_cache_copies_what_kopf_holds() -> None:
    held = {"uid": "x", "metadata": {"name": "a"}}
    cache = IndexCache({"Service": {("ns", "svc"): [held]}})
    got = cache.children("ns", "svc", "Service")
    assert got == [held] and got[0] is not held
    assert cache.children("ns", "other", "Service") == []
    assert manifest_digest(held) == manifest_digest(got[0])
