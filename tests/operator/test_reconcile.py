"""``reconcile`` against a recording in-memory API: what it reads and writes per pass.

The request budget is what makes the operator scale (issue 15): a settled resource costs one round
of reads and a dry run per applied child, and writes nothing; a drifted child is the only write.
Kubernetes semantics (server-side apply, field removal, rejections) are the real control plane's
tier (tests/cluster); this fake only stores what it is given.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from arctic_operator.plan import plan_reads_replicas
from arctic_operator.reconcile import (
    CREATE_ONLY,
    FIELD_MANAGER,
    Cluster,
    Outcome,
    Request,
    Settled,
    _same_checks,
    absent,
    check_round,
    content_digest,
    first_checks,
    first_pass,
    judge,
    manifest_digest,
    reconcile,
    same_object,
    unresolved,
    write_rounds,
)
from arctic_operator.settings import OperatorSettings
from arctic_operator.validation import parse
from tests.operator.status_checks import assert_typed_status

SAMPLE = Path(__file__).resolve().parents[2] / "docs" / "samples" / "smollm2-cpu.yaml"
NOW = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)
UID = "uid-1"


class RecordingCluster(Cluster):
    """Objects by (kind, name); every request recorded as (verb, kind, name), and in ``rounds``:
    the requests of one ``map`` call (sent side by side) together, any other request alone.
    ``reject``: (verb, kind) -> the message of a 422 the API server answers."""

    def __init__(self) -> None:  # no API client: nothing here goes over the network
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.requests: list[tuple[str, str, str]] = []
        self.rounds: list[list[tuple[str, str, str]]] = []
        self.reject: dict[tuple[str, str], str] = {}
        self.rv = 0
        self._in_round = False

    def _record(self, verb: str, kind: str, name: str) -> None:
        self.requests.append((verb, kind, name))
        if self._in_round:
            self.rounds[-1].append((verb, kind, name))
        else:
            self.rounds.append([(verb, kind, name)])
        if (verb, kind) in self.reject:
            error = ApiException(status=422, reason="Unprocessable Entity")
            error.body = json.dumps({"kind": "Status", "message": self.reject[(verb, kind)]})
            raise error

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
        items = list(items)
        if not items:  # nothing sent
            return []
        self.rounds.append([])
        self._in_round = True
        try:
            return [fn(x) for x in items]
        finally:
            self._in_round = False

    def _store(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.rv += 1
        stored = copy.deepcopy(obj)
        stored["metadata"]["resourceVersion"] = str(self.rv)
        stored["metadata"].setdefault("uid", f"child-{self.rv}")
        self.objects[(obj["kind"], obj["metadata"]["name"])] = stored
        return copy.deepcopy(stored)

    def get(
        self, api_version: str, kind: str, name: str, namespace: str | None, *, cached: bool = False
    ) -> dict[str, Any] | None:
        self._record("cached get" if cached else "get", kind, name)
        found = self.objects.get((kind, name))
        return copy.deepcopy(found) if found else None

    def list(self, api_version: str, kind: str, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        self._record("list", kind, label_selector.split("instance=")[1].split(",")[0])
        wanted = dict(pair.split("=") for pair in label_selector.split(","))
        return [
            {k: v for k, v in copy.deepcopy(o).items() if k not in ("apiVersion", "kind")}
            for (k, _), o in self.objects.items()
            if k == kind and wanted.items() <= (o["metadata"].get("labels") or {}).items()
        ]

    def create(self, obj: Any, *, dry_run: bool = False) -> bool:
        self._record("dry-run create" if dry_run else "create", obj["kind"], obj["metadata"]["name"])
        if (obj["kind"], obj["metadata"]["name"]) in self.objects:
            return False
        if not dry_run:
            self._store(obj)
        return True

    def apply(self, obj: Any, *, dry_run: bool = False) -> dict[str, Any]:
        key = (obj["kind"], obj["metadata"]["name"])
        self._record("dry-run" if dry_run else "apply", *key)
        before = self.objects.get(key)
        would_be = copy.deepcopy(obj)
        # the operator's field owner: the fields of what it applied (here, a digest stands for them)
        would_be["metadata"]["managedFields"] = [
            {"manager": FIELD_MANAGER, "operation": "Apply", "fieldsV1": manifest_digest(obj)}
        ]
        if before is not None:
            would_be["metadata"]["resourceVersion"] = before["metadata"]["resourceVersion"]
            would_be["metadata"]["uid"] = before["metadata"]["uid"]
            if "status" in before:
                would_be["status"] = before["status"]
            if would_be == before:
                return copy.deepcopy(before)  # a no-op is not stored
        return would_be if dry_run else self._store(would_be)

    def delete(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: str,
        *,
        uid: str = "",
        resource_version: str = "",
    ) -> None:
        self._record("delete", kind, name)
        found = self.objects.get((kind, name))
        meta = (found or {}).get("metadata") or {}
        if (uid and uid != meta.get("uid")) or (
            resource_version and resource_version != meta.get("resourceVersion")
        ):
            raise ApiException(status=409, reason="Conflict")  # the precondition fails
        self.objects.pop((kind, name), None)

    def edit(self, kind: str, name: str, change: Callable[[dict[str, Any]], None], *, ours: bool) -> None:
        """Someone else's write (a new resourceVersion). ``ours``: it changes a field the operator
        applied, and the API server moves that field's owner from the operator's entry to the
        writer's; otherwise the operator's entry stays as it was."""
        obj = self.objects[(kind, name)]
        change(obj)
        owners = obj["metadata"].setdefault("managedFields", [])
        if ours:
            for entry in owners:
                if entry["manager"] == FIELD_MANAGER:
                    entry["fieldsV1"] = "all but the edited field"
        owners.append({"manager": "kubectl-edit", "operation": "Update"})
        self._store(obj)


def body() -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load(SAMPLE.read_text())
    obj["metadata"] = {"name": "svc", "namespace": "models", "uid": UID, "generation": 1}
    return obj


def run(cluster: RecordingCluster, resource: dict[str, Any], settled: Settled | None = None) -> Outcome:
    cluster.requests.clear()
    cluster.rounds.clear()
    outcome = reconcile(resource, cluster, OperatorSettings(), NOW, settled)
    resource["status"] = assert_typed_status(outcome.status)
    return outcome


def writes(cluster: RecordingCluster) -> list[tuple[str, str, str]]:
    return [r for r in cluster.requests if r[0] in ("create", "apply", "delete")]


def degraded(outcome: Outcome) -> tuple[str, str]:
    condition = next(c for c in outcome.status["conditions"] if c["type"] == "Degraded")
    return condition["reason"], condition["message"]


READS = [
    ("cached get", "Secret", "svc-admin"),  # from the API server's watch cache, as the listings
    ("list", "Pod", "svc"),
    ("list", "Deployment", "svc"),
    ("list", "StatefulSet", "svc"),
    ("list", "Service", "svc"),
    ("list", "PodDisruptionBudget", "svc"),
]
#: Every planned child dry-run. A child not listed is not read by name: its dry run answers whether
#: its name is taken (an answer that would create it has no resourceVersion).
CHECKS = [
    ("dry-run create", "Secret", "svc-admin"),
    ("dry-run", "Deployment", "svc"),
    ("dry-run", "Service", "svc"),
]
CREATES = [("create", "Secret", "svc-admin"), ("apply", "Deployment", "svc"), ("apply", "Service", "svc")]
#: A first pass (no child known settled): the reads, and with them every planned child dry-run,
#: planned with a fresh admin token.
FIRST = [*READS, *CHECKS]


def test_first_pass_checks_everything_with_the_reads_then_writes_in_one_round() -> None:
    cluster, resource = RecordingCluster(), body()
    outcome = run(cluster, resource)
    # two round trips: the reads and every dry run; the writes
    assert cluster.rounds == [FIRST, CREATES]
    assert len(cluster.requests) == 12  # 14 before: each unlisted child was also read by name
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
    token = cluster.objects[("Secret", "svc-admin")]["stringData"]["token"]
    outcome = run(cluster, resource)  # no settled memory (an operator restart): a first pass
    assert cluster.rounds == [FIRST]  # the Secret's dry-run create answers "exists"; nothing written
    assert cluster.objects[("Secret", "svc-admin")]["stringData"]["token"] == token
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
    assert cluster.rounds == [READS]  # nothing changed on either side since the last apply
    assert outcome.applied == [
        "Secret/svc-admin: unchanged",
        "Deployment/svc: unchanged",
        "Service/svc: unchanged",
    ]

    def revision(obj: dict[str, Any]) -> None:  # as the Deployment controller does
        obj["metadata"]["annotations"] = {"deployment.kubernetes.io/revision": "1"}

    cluster.edit("Deployment", "svc", revision, ours=False)  # leaves the operator's fields alone
    run(cluster, resource, settled)
    assert cluster.rounds == [READS]

    def image(obj: dict[str, Any]) -> None:
        obj["spec"]["template"]["spec"]["containers"][0]["image"] = "edited/by-hand:1"

    cluster.edit("Deployment", "svc", image, ours=True)  # a hand edit of a field the operator set
    outcome = run(cluster, resource, settled)
    assert cluster.rounds == [READS, [("dry-run", "Deployment", "svc")], [("apply", "Deployment", "svc")]]
    assert "Deployment/svc: updated" in outcome.applied
    resource["spec"]["service"] = {"port": 9000}  # a changed spec: a changed manifest
    run(cluster, resource, settled)
    assert cluster.rounds[1:] == [
        [("dry-run", "Deployment", "svc"), ("dry-run", "Service", "svc")],  # the port is in both
        [("apply", "Deployment", "svc"), ("apply", "Service", "svc")],
    ]
    run(cluster, resource, settled)
    assert cluster.rounds == [READS]


def test_a_name_taken_by_someone_else_changes_nothing() -> None:
    cluster, resource = RecordingCluster(), body()
    cluster.objects[("Service", "svc")] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "svc", "namespace": "models", "resourceVersion": "1"},
    }
    outcome = run(cluster, resource)
    # its dry run answers that it exists (a resourceVersion), though not listed: read by name
    assert cluster.rounds == [FIRST, [("get", "Service", "svc")]]  # and nothing written
    assert cluster.objects.keys() == {("Service", "svc")}  # not even the admin Secret
    assert degraded(outcome) == (
        "NameConflict",
        "Service/svc exists and is not owned by this ArcticInferenceService; "
        "rename or delete it (nothing was changed)",
    )


@pytest.mark.parametrize(
    ("verb", "kind"), [("dry-run create", "Secret"), ("dry-run", "Deployment"), ("dry-run", "Service")]
)
def test_one_child_rejected_in_its_dry_run_leaves_none_applied(verb: str, kind: str) -> None:
    cluster, resource = RecordingCluster(), body()
    cluster.reject[(verb, kind)] = f"{kind}.spec: Invalid value"
    outcome = run(cluster, resource)
    name = "svc-admin" if kind == "Secret" else "svc"
    # a failed dry run does not say whether the name is taken (that is reported first): read it
    assert cluster.rounds == [FIRST, [("get", kind, name)]]
    assert cluster.objects == {} and outcome.applied == []
    assert degraded(outcome) == (
        "ChildRejected",
        f"the API server rejects {kind}/{name}: {kind}.spec: Invalid value",
    )
    assert ("Warning", "ChildRejected", degraded(outcome)[1]) in outcome.events
    del cluster.reject[(verb, kind)]  # fixed (say, by the user): the next pass applies everything
    outcome = run(cluster, resource)
    assert cluster.rounds == [FIRST, CREATES]
    assert degraded(outcome)[0] != "ChildRejected"


def test_a_secret_made_meanwhile_is_not_created_again() -> None:
    cluster, resource = RecordingCluster(), body()
    real_get = cluster.get

    def get(
        api_version: str, kind: str, name: str, namespace: str | None, *, cached: bool = False
    ) -> dict[str, Any] | None:
        found = real_get(api_version, kind, name, namespace, cached=cached)
        if kind == "Secret" and cached and ("Secret", name) not in cluster.objects:
            # someone (an earlier pass, say) creates it right after this read from the cache
            cluster.objects[("Secret", name)] = child("Secret", name, rv="1")
        return found

    cluster.get = get  # type: ignore[method-assign]
    outcome = run(cluster, resource)
    assert cluster.rounds[0][6] == ("dry-run create", "Secret", "svc-admin")  # answered: it exists
    assert cluster.rounds[1] == [("get", "Secret", "svc-admin")]  # the cache said no: read it live
    assert cluster.rounds[2] == [("apply", "Deployment", "svc"), ("apply", "Service", "svc")]
    assert outcome.applied == [
        "Secret/svc-admin: unchanged",
        "Deployment/svc: created",
        "Service/svc: created",
    ]


def test_a_secret_someone_else_made_meanwhile_is_a_name_conflict() -> None:
    cluster, resource = RecordingCluster(), body()
    real_get = cluster.get

    def get(
        api_version: str, kind: str, name: str, namespace: str | None, *, cached: bool = False
    ) -> dict[str, Any] | None:
        found = real_get(api_version, kind, name, namespace, cached=cached)
        if kind == "Secret" and cached:  # a user's Secret, made right after the cache's answer
            cluster.objects[("Secret", name)] = child("Secret", name, owner=None, rv="1")
        return found

    cluster.get = get  # type: ignore[method-assign]
    outcome = run(cluster, resource)
    assert cluster.rounds == [FIRST, [("get", "Secret", "svc-admin")]]  # nothing written
    assert degraded(outcome)[0] == "NameConflict"
    assert cluster.objects.keys() == {("Secret", "svc-admin")}


def test_a_dropped_child_is_deleted_after_the_applies() -> None:
    cluster, resource, settled = RecordingCluster(), body(), Settled()
    resource["spec"]["replicas"] = 2  # two replicas get a PodDisruptionBudget
    run(cluster, resource, settled)
    assert ("PodDisruptionBudget", "svc") in cluster.objects
    resource["spec"]["replicas"] = 1
    outcome = run(cluster, resource, settled)
    assert cluster.rounds == [
        [*READS],
        [("dry-run", "Deployment", "svc")],
        [("apply", "Deployment", "svc")],
        # read by name first: only the object listed, still this resource's, is deleted
        [("get", "PodDisruptionBudget", "svc"), ("delete", "PodDisruptionBudget", "svc")],
    ]
    assert "PodDisruptionBudget/svc: deleted" in outcome.applied
    assert ("PodDisruptionBudget", "svc") not in cluster.objects


def test_with_autoscaling_the_workload_is_read_before_planning() -> None:
    cluster, resource = RecordingCluster(), body()
    resource["spec"].pop("replicas")
    resource["spec"]["autoscaling"] = {"minReplicas": 2, "maxReplicas": 6}
    run(cluster, resource)
    assert cluster.rounds[1] == [("get", "Deployment", "svc")]  # alone, before the plan
    # then the dry runs (the other children unlisted: they answer that they are absent), the writes
    assert cluster.rounds[2] == [
        ("dry-run create", "Secret", "svc-admin"),
        ("dry-run", "Deployment", "svc"),
        ("dry-run", "Service", "svc"),
        ("dry-run", "PodDisruptionBudget", "svc"),
    ]
    assert [r[0] for r in cluster.rounds[3]] == ["create", "apply", "apply", "apply"]
    cluster.objects[("Deployment", "svc")]["spec"]["replicas"] = 5  # the autoscaler's choice
    cluster.objects[("Deployment", "svc")]["metadata"]["labels"] = {}  # not listed: read by name
    run(cluster, resource)
    assert cluster.rounds[1] == [("get", "Deployment", "svc")]
    assert cluster.objects[("Deployment", "svc")]["spec"]["replicas"] == 5  # kept


def test_plan_reads_replicas_only_with_autoscaling() -> None:
    resource = body()
    assert not plan_reads_replicas(parse(resource).spec)
    resource["spec"].pop("replicas")
    resource["spec"]["autoscaling"] = {"minReplicas": 1, "maxReplicas": 3}
    assert plan_reads_replicas(parse(resource).spec)


def child(
    kind: str, name: str, *, owner: str | None = UID, rv: str | None = None, **extra: Any
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "models"}
    if owner is not None:
        meta["ownerReferences"] = [{"uid": owner, "controller": True}]
    if rv is not None:
        meta["resourceVersion"] = rv
    if kind == "Secret":
        meta["annotations"] = {CREATE_ONLY: "true"}
    return {"apiVersion": "v1", "kind": kind, "metadata": meta, **extra}


def plain(requests: list[Request]) -> list[tuple[str, str, str]]:
    return [(r.verb, *r.key) for r in requests]


def test_check_round_dry_runs_all_but_the_settled_and_reads_nothing_by_name() -> None:
    secret, service, deployment = child("Secret", "a-admin"), child("Service", "a"), child("Deployment", "a")
    ours = {"manager": FIELD_MANAGER, "operation": "Apply", "fieldsV1": {"f:spec": {"f:port": {}}}}
    stored = {
        **service,
        "metadata": {**service["metadata"], "resourceVersion": "4", "uid": "s1", "managedFields": [ours]},
    }
    settled = {(UID, "Service", "a"): (manifest_digest(service), content_digest(stored))}
    known: dict[tuple[str, str], dict[str, Any] | None] = {
        ("Secret", "a-admin"): None,
        ("Service", "a"): stored,
    }
    assert plain(check_round([secret, service, deployment], known, UID, settled)) == [
        ("dry-run create", "Secret", "a-admin"),
        ("dry-run apply", "Deployment", "a"),
    ]
    # its status written since (a new resourceVersion, the status subresource's field owner): settled
    status_written = {
        **stored,
        "metadata": {
            **stored["metadata"],
            "resourceVersion": "5",
            "managedFields": [ours, {"manager": "kube-controller-manager", "subresource": "status"}],
        },
        "status": {"loadBalancer": {}},
    }
    known = {("Secret", "a-admin"): child("Secret", "a-admin", rv="1"), ("Service", "a"): status_written}
    assert plain(check_round([secret, service], known, UID, settled)) == []
    # a label someone else adds leaves the operator's fields alone (its apply would keep it): settled
    labelled = {
        **stored,
        "metadata": {
            **stored["metadata"],
            "resourceVersion": "6",
            "labels": {"team": "x"},
            "managedFields": [ours, {"manager": "kubectl-label", "operation": "Update"}],
        },
    }
    known = {("Secret", "a-admin"): child("Secret", "a-admin", rv="1"), ("Service", "a"): labelled}
    assert plain(check_round([secret, service], known, UID, settled)) == []
    # a field the operator set changed by hand (its owner moves to the editor): dry-run again
    taken = {**ours, "fieldsV1": {"f:spec": {}}}
    edited = {
        **stored,
        "metadata": {
            **stored["metadata"],
            "resourceVersion": "7",
            "managedFields": [taken, {"manager": "kubectl-edit", "operation": "Update"}],
        },
    }
    known = {("Secret", "a-admin"): child("Secret", "a-admin", rv="1"), ("Service", "a"): edited}
    assert plain(check_round([secret, service], known, UID, settled)) == [("dry-run apply", "Service", "a")]
    # deleted and made again (another uid), the same fields: dry-run again
    remade = {**stored, "metadata": {**stored["metadata"], "resourceVersion": "8", "uid": "s2"}}
    known = {("Secret", "a-admin"): child("Secret", "a-admin", rv="1"), ("Service", "a"): remade}
    assert plain(check_round([secret, service], known, UID, settled)) == [("dry-run apply", "Service", "a")]
    assert plain(check_round([secret], {}, UID, {})) == [("dry-run create", "Secret", "a-admin")]


def test_first_checks_only_while_no_child_is_settled_and_count_only_for_the_same_manifests() -> None:
    secret, service = child("Secret", "a-admin"), child("Service", "a", spec={"port": 1})
    assert plain(first_checks([secret, service], UID, {})) == [
        ("dry-run create", "Secret", "a-admin"),
        ("dry-run apply", "Service", "a"),
    ]
    settled = {(UID, "Service", "a"): (manifest_digest(service), "x")}
    assert first_checks([secret, service], UID, settled) == []  # a later pass: reads first
    sent = first_checks([secret, service], UID, {})
    other_token = {**secret, "stringData": {"token": "another"}}  # create-only: not compared
    assert _same_checks(sent, first_checks([other_token, service], UID, {}))
    port_changed = child("Service", "a", spec={"port": 2})
    assert not _same_checks(sent, first_checks([secret, port_changed], UID, {}))
    assert not _same_checks(sent, first_checks([service], UID, {}))


def test_write_rounds_put_the_creates_and_applies_together_and_the_deletes_after() -> None:
    secret, service = child("Secret", "a-admin"), child("Service", "a", spec={"port": 1})
    live = child("Service", "a", rv="3", spec={"port": 1})
    old_pdb = child("PodDisruptionBudget", "a", rv="2")
    foreign = child("Deployment", "b", owner="someone-else", rv="9")
    listed = {("PodDisruptionBudget", "a"): ("v1", old_pdb), ("Deployment", "b"): ("v1", foreign)}
    current: dict[tuple[str, str], dict[str, Any] | None] = {
        ("Secret", "a-admin"): None,
        ("Service", "a"): live,
    }
    changed = {**live, "spec": {"port": 2}}
    rounds = write_rounds([secret, service], UID, current, {("Service", "a"): changed}, listed)
    assert [plain(r) for r in rounds] == [
        [("create", "Secret", "a-admin"), ("apply", "Service", "a")],
        [("delete", "PodDisruptionBudget", "a")],  # never someone else's
    ]
    same = {("Service", "a"): live, ("Secret", "a-admin"): False}  # as it is; the Secret exists now
    assert write_rounds([secret, service], UID, current, same, {}) == []
    assert write_rounds([service], UID, current, {}, {}) == []  # settled: no answer, no write


def test_judge_reports_a_taken_name_before_a_rejection_and_raises_other_failures() -> None:
    service, deployment = child("Service", "a"), child("Deployment", "a")
    rejected = ApiException(status=422)
    rejected.body = json.dumps({"message": "spec.ports: Required value"})
    taken = {("Service", "a"): None, ("Deployment", "a"): child("Deployment", "a", owner="x", rv="1")}
    answers = {("Service", "a"): rejected}
    assert judge([service, deployment], UID, taken, answers) == (
        "NameConflict",
        "Deployment/a exists and is not owned by this ArcticInferenceService; "
        "rename or delete it (nothing was changed)",
    )
    free = {("Service", "a"): None, ("Deployment", "a"): None}
    assert judge([service, deployment], UID, free, answers) == (
        "ChildRejected",
        "the API server rejects Service/a: spec.ports: Required value",
    )
    assert judge([service, deployment], UID, free, {}) is None
    with pytest.raises(ApiException):
        judge([service, deployment], UID, free, {("Deployment", "a"): ApiException(status=500)})


class ThreadedCluster(RecordingCluster):
    """The fake with ``Cluster.map``'s thread pool: every request of a round waits at a barrier for
    all the others of its round, so a round not sent side by side breaks it (a timeout)."""

    def __init__(self) -> None:
        super().__init__()
        self._pool = ThreadPoolExecutor(max_workers=16)
        self.barrier: threading.Barrier | None = None
        self.lock = threading.Lock()

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
        items = list(items)
        if not items:
            return []
        with self.lock:
            self.rounds.append([])
            self.barrier = threading.Barrier(len(items), timeout=10)
        return Cluster.map(self, fn, items)

    def _record(self, verb: str, kind: str, name: str) -> None:
        with self.lock:
            self.requests.append((verb, kind, name))
            self.rounds[-1].append((verb, kind, name))
            barrier = self.barrier
        assert barrier is not None
        barrier.wait()  # BrokenBarrierError unless the whole round is in flight together


def test_the_rounds_are_sent_side_by_side() -> None:
    cluster, resource = ThreadedCluster(), body()
    outcome = run(cluster, resource)
    assert [sorted(r) for r in cluster.rounds] == [sorted(FIRST), sorted(CREATES)]
    assert outcome.applied == ["Secret/svc-admin: created", "Deployment/svc: created", "Service/svc: created"]
    cluster._pool.shutdown()


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


def test_a_dry_run_that_would_create_the_child_shows_it_absent() -> None:
    secret, service = child("Secret", "a-admin"), child("Service", "a")
    would_create = {**service, "metadata": {**service["metadata"], "uid": "new", "creationTimestamp": "t"}}
    assert absent(service, would_create)  # no resourceVersion: nothing stored has this name
    assert not absent(service, child("Service", "a", rv="7"))  # applied to an object that exists
    assert not absent(service, None)  # not dry-run (known settled): nothing said
    error = ApiException(status=422)
    assert not absent(service, error)
    assert absent(secret, True)  # the dry-run create would create it
    assert not absent(secret, False)  # 409: it exists
    assert not absent(secret, error)


def test_unresolved_reads_only_what_neither_a_listing_nor_a_dry_run_answered() -> None:
    secret, service, deployment = child("Secret", "a-admin"), child("Service", "a"), child("Deployment", "a")
    listed = child("Deployment", "a", rv="3")
    known: dict[tuple[str, str], dict[str, Any] | None] = {
        ("Secret", "a-admin"): None,  # the watch cache has none
        ("Deployment", "a"): listed,
    }
    answers: dict[tuple[str, str], Any] = {("Secret", "a-admin"): True, ("Service", "a"): service}
    assert unresolved([secret, service, deployment], known, answers) == []  # the usual first pass
    exists = {("Secret", "a-admin"): False, ("Service", "a"): child("Service", "a", owner=None, rv="1")}
    assert plain(unresolved([secret, service, deployment], known, exists)) == [
        ("get", "Secret", "a-admin"),  # the cache was behind
        ("get", "Service", "a"),  # there, without the resource's labels
    ]
    failed = {("Secret", "a-admin"): True, ("Service", "a"): ApiException(status=500)}
    assert plain(unresolved([secret, service, deployment], known, failed)) == [("get", "Service", "a")]


def test_a_first_pass_is_one_with_no_child_of_the_resource_known_settled() -> None:
    cluster, resource, settled = RecordingCluster(), body(), Settled()
    assert first_pass(settled, UID)
    run(cluster, resource, settled)
    assert not first_pass(settled, UID)  # its children are settled now
    assert first_pass(settled, "another-uid")


def test_without_the_operators_field_owner_a_child_is_digested_whole() -> None:
    # managedFields cleared (or an API server that keeps none, as the emulated one): any write but
    # a status write counts
    plain_child = child("Deployment", "a", rv="1")
    status_only = {
        **plain_child,
        "metadata": {
            **plain_child["metadata"],
            "resourceVersion": "2",
            "managedFields": [{"manager": "kube-controller-manager", "subresource": "status"}],
        },
        "status": {"replicas": 1},
    }
    assert content_digest(status_only) == content_digest(plain_child)
    labelled = {**plain_child, "metadata": {**plain_child["metadata"], "labels": {"team": "x"}}}
    assert content_digest(labelled) != content_digest(plain_child)
    # with it, only the operator's entry and the uid count
    ours = [{"manager": FIELD_MANAGER, "operation": "Apply", "fieldsV1": {"f:spec": {}}}]
    owned = {**plain_child, "metadata": {**plain_child["metadata"], "uid": "u", "managedFields": ours}}
    relabelled = {**owned, "metadata": {**owned["metadata"], "labels": {"team": "x"}, "resourceVersion": "3"}}
    assert content_digest(relabelled) == content_digest(owned)
