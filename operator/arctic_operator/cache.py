"""The watch-based cache of children (issue 15): what ``reconcile.observe`` would otherwise list
from the API server on every pass.

kopf keeps one index per child kind (``handlers.register``), fed by its watches; the index function
is ``index_child`` here, a pure function from one object to its entry. Each entry is keyed by
(namespace, ArcticInferenceService name), the ``app.kubernetes.io/instance`` label every child
carries (``plan.labels``), and holds only what a pass reads (1,000 resources' Deployments, Services
and PDBs stay in memory):

* a child: its apiVersion, kind, name, namespace, uid, resourceVersion and controller
  ownerReference; a workload's ``spec.replicas`` and the status fields ``status.compute_status``
  reads (its replica counts, and only the conditions it reads: a rollout past its deadline, a
  ReplicaFailure); and two digests of the whole object (``SUMMARY``): ``reconcile.content_digest`` (is it
  still as the last apply left it?) and the digest of what ``reconcile.same_object`` compares (would
  a dry-run apply's answer change it?), both computed from the object as watched.

Engine pods are not watched: a pass lists a resource's pods from the API server only while its
workload exists and is not all ready (``status.all_replicas_ready``); a fully ready workload's pods
have nothing to report. A watch of every pod costs the operator an event (a whole Pod) for each of
their status changes, and kopf's bookkeeping for each pod.

A cache can lag the API server, like the listings from its watch cache it replaces: a child
created a moment ago may be missing (its dry run shows it exists, and it is read by name before
anything is written: ``reconcile.unresolved``), and one deleted a moment ago may still be there (a
delete is confirmed by reading the child by name first: ``reconcile.send``). The next pass sees
what this one missed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from arctic_operator.plan import MANAGED_BY
from arctic_operator.reconcile import SUMMARY, WORKLOADS, comparable_digest, content_digest

INSTANCE = "app.kubernetes.io/instance"
#: The labels every child carries whatever its resource (kopf's filter: objects
#: without them are not indexed).
COMMON_LABELS = {"app.kubernetes.io/name": "arctic-serve", "app.kubernetes.io/managed-by": MANAGED_BY}
_WORKLOAD_STATUS = ("replicas", "readyReplicas", "updatedReplicas")
_CONDITION = ("type", "status", "reason", "message")

IndexKey = tuple[str, str]  # (namespace, resource name)


def index_key(obj: Mapping[str, Any]) -> IndexKey | None:
    """(namespace, resource name) of a child; None without the instance label."""
    meta = obj.get("metadata") or {}
    instance = (meta.get("labels") or {}).get(INSTANCE)
    if not instance or any((meta.get("labels") or {}).get(k) != v for k, v in COMMON_LABELS.items()):
        return None
    return (str(meta.get("namespace") or ""), str(instance))


def _read_condition(c: Mapping[str, Any]) -> bool:
    """Whether ``status.compute_status`` reads a workload condition (``_rollout_stuck``,
    ``_replica_failure``)."""
    return (c.get("type"), c.get("reason")) == ("Progressing", "ProgressDeadlineExceeded") or (
        c.get("type"),
        c.get("status"),
    ) == ("ReplicaFailure", "True")


def _conditions(conditions: Iterable[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    return [{k: c[k] for k in _CONDITION if k in c} for c in conditions or []]


def child_summary(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What a pass reads of a child (see the module docstring), in the object's own shape."""
    meta = obj.get("metadata") or {}
    summary: dict[str, Any] = {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
            "ownerReferences": [
                {"uid": r.get("uid"), "controller": True}
                for r in meta.get("ownerReferences") or []
                if r.get("controller")
            ],
        },
        SUMMARY: (content_digest(obj), comparable_digest(obj)),
    }
    if obj.get("kind") in WORKLOADS:
        replicas = (obj.get("spec") or {}).get("replicas")
        if replicas is not None:
            summary["spec"] = {"replicas": replicas}
        status = obj.get("status") or {}
        summary["status"] = {k: status[k] for k in _WORKLOAD_STATUS if k in status}
        read = [c for c in status.get("conditions") or [] if _read_condition(c)]
        if read:
            summary["status"]["conditions"] = _conditions(read)
    return summary


def index_child(obj: Mapping[str, Any]) -> dict[IndexKey, dict[str, Any]]:
    """A kopf index function's answer for a child: {(namespace, resource): summary}, {} for others."""
    key = index_key(obj)
    return {} if key is None else {key: child_summary(obj)}


class Cache(Protocol):
    """What ``reconcile.observe`` reads instead of listing (``IndexCache``: kopf's indexes)."""

    def children(self, namespace: str, name: str, kind: str) -> list[dict[str, Any]]: ...


def _values(index: Mapping[IndexKey, Iterable[dict[str, Any]]], key: IndexKey) -> list[dict[str, Any]]:
    """The values under ``key``, copied (kopf changes its index in its own thread meanwhile: a copy of
    a dict's values is one step under the GIL; a rare race is retried)."""
    for _ in range(10):
        try:
            store = index.get(key)
            return [dict(v) for v in tuple(store or ())]
        except RuntimeError:  # changed while copied
            continue
    store = index.get(key)
    return [dict(v) for v in tuple(store or ())]


class IndexCache:
    """``Cache`` over kopf's indexes of the children, by kind (``{kind: index}``)."""

    def __init__(self, children: Mapping[str, Mapping[IndexKey, Iterable[dict[str, Any]]]]) -> None:
        self._children = children

    def children(self, namespace: str, name: str, kind: str) -> list[dict[str, Any]]:
        return _values(self._children[kind], (namespace, name))
