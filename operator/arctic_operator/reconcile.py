"""Apply a plan to the cluster and observe the result: the operator's only Kubernetes I/O.

``reconcile(body, cluster, settings, now)`` is level-based: it reads the resource, validates it,
plans every child object and applies them with server-side apply under one field manager
(``FIELD_MANAGER``): a hand-edited Deployment is put back, a field the spec no longer asks for is
removed, and children the plan no longer has are deleted. A child whose name is taken by an object
the resource does not own is a ``NameConflict`` (nothing is applied, nothing taken over); children
the API server rejects (server-side dry run first) are ``ChildRejected`` with the server's message.
It then reads the workload's status and returns the resource's new status plus the events to post.
It never writes the resource's spec. Running it twice, or after a restart in the middle of a
previous run, creates nothing twice: children have fixed names and apply is idempotent.

Requests per pass (issue 15: the operator at 1,000 resources), in rounds of requests side by side:
the reads (the admin Secret, from the API server's watch cache; the children by their labels and
the pods: from the operator's own watches, ``arctic_operator.cache``, where the handlers keep them,
else one listing per kind from the API server's watch cache); the checks (a dry run of each child
that may have changed); the creates and applies something needs; the deletes, if any. A child not
listed is not read by name: its dry run answers whether it exists (``absent``: a dry run that would
create it), and only a child that exists unlisted, or whose dry run failed, is read by name before
anything is written (``unresolved``: a name taken by an object without the resource's labels,
reported as ``NameConflict``; also a child whose dry run shows another object than the one seen,
``replaced``). A delete reads the child by name first and deletes only that object, still this
resource's. A first pass (no child known settled: a new resource, or the first pass after a
restart) sends its dry runs with the reads: two round trips (reads and checks, writes); a settled
resource waits for the reads only. (With autoscaling, a workload not listed is read by name before
planning, the plan keeps its replicas; with monitoring, the plan needs the monitor CRDs: there the
checks wait for the reads.)

``Cluster`` sends plain JSON requests through the Kubernetes client (the dynamic client's discovery
gives the paths, so any kind works, ServiceMonitor included); tests run the same code against the
project's emulated API server and a recording fake (tests/operator/test_reconcile.py).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import secrets
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from arctic_operator.api import EngineStatus
from arctic_operator.plan import (
    PlanError,
    PlanInputs,
    labels,
    plan,
    plan_reads_replicas,
    selector_string,
    workload_kind,
)
from arctic_operator.settings import OperatorSettings
from arctic_operator.status import POD_FAILURE_REASONS, all_replicas_ready, compute_status
from arctic_operator.validation import parse, validate

if TYPE_CHECKING:
    from arctic_operator.cache import Cache

MONITOR_CRDS = {
    "ServiceMonitor": "servicemonitors.monitoring.coreos.com",
    "PodMonitor": "podmonitors.monitoring.coreos.com",
}
CREATE_ONLY = "serving.arctic-serve.dev/create-only"
#: The one field manager of every server-side apply the operator makes.
FIELD_MANAGER = "arctic-serve-operator"
#: Kinds of children the operator may create, and so may have to delete when the plan drops them.
CHILD_KINDS = (
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("v1", "Service"),
    ("policy/v1", "PodDisruptionBudget"),
)
#: The kinds of child that run the engines' pods (one of them per resource, by its model cache).
WORKLOADS = ("Deployment", "StatefulSet")
#: With network policies on (the chart grants their RBAC only then), also this kind.
NETWORK_POLICY_KIND = ("networking.k8s.io/v1", "NetworkPolicy")
#: The key of a cached child's digests (``cache.child_summary``): a summary holds only what a pass
#: reads, and these stand for the rest (``content_digest``, ``same_object``).
SUMMARY = "arctic-serve.dev/digests"

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Outcome:
    status: dict[str, Any]
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    applied: list[str] = field(default_factory=list)  # "Kind/name: created|updated|unchanged|deleted"


class Cluster:
    """Thin access to the API server: plain JSON requests through the kubernetes client's ApiClient
    (its configuration, authentication and connection pool), with the dynamic client's discovery
    for the paths (so any kind works, ServiceMonitor included).

    Objects come back as the API server's JSON, decoded once: the dynamic client's wrapper objects
    cost more CPU than the request itself on a busy operator. ``map`` runs independent requests of
    one reconcile side by side (``fan_out`` threads shared by every reconcile), so a reconcile waits
    for a few round trips, not for one per request.
    """

    def __init__(self, api_client: Any, fan_out: int = 16) -> None:
        from kubernetes.dynamic import DynamicClient

        self.api_client = api_client
        self.dyn = DynamicClient(api_client)  # type: ignore[no-untyped-call]
        self._pool = ThreadPoolExecutor(max_workers=fan_out, thread_name_prefix="arctic-api")
        self._resources: dict[tuple[str, str], Any] = {}
        self._discovery = threading.Lock()

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """``[fn(x) for x in items]``, the calls side by side; the first error is raised."""
        items = list(items)
        if len(items) <= 1:
            return [fn(x) for x in items]
        return list(self._pool.map(fn, items))

    def _resource(self, api_version: str, kind: str) -> Any:
        """The kind's API resource, discovered once (under a lock: the first requests of a burst
        would otherwise each run the whole discovery)."""
        key = (api_version, kind)
        found = self._resources.get(key)
        if found is None:
            with self._discovery:
                found = self._resources.get(key)
                if found is None:
                    found = self._resources[key] = self.dyn.resources.get(api_version=api_version, kind=kind)
        return found

    def _path(self, api_version: str, kind: str, name: str | None, namespace: str | None) -> str:
        resource = self._resource(api_version, kind)
        return str(resource.path(name=name, namespace=namespace if resource.namespaced else None))

    def _request(
        self,
        method: str,
        path: str,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        """One request; the decoded JSON answer. Errors raise the client's ApiException subclass
        (NotFoundException, ConflictException, ...) with the server's Status in ``body``."""
        from kubernetes.client.exceptions import ApiException

        headers = {"Accept": "application/json", "Content-Type": content_type}
        request = self.api_client.param_serialize(
            method,
            path,
            query_params=list(query),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api_client.call_api(*request)
        data = response.read()
        if not 200 <= response.status <= 299:
            raise ApiException.from_response(http_resp=response, body=None, data=None)
        result: dict[str, Any] = json.loads(data)
        return result

    def get(
        self, api_version: str, kind: str, name: str, namespace: str | None, *, cached: bool = False
    ) -> dict[str, Any] | None:
        """The object, None if it does not exist. ``cached``: from the API server's watch cache
        (``resourceVersion=0``, as ``list``: no read through to etcd, milliseconds behind it)."""
        from kubernetes.client.exceptions import NotFoundException

        query = [("resourceVersion", "0")] if cached else []
        try:
            return self._request("GET", self._path(api_version, kind, name, namespace), query)
        except NotFoundException:
            return None

    def create(self, obj: Mapping[str, Any], *, dry_run: bool = False) -> bool:
        """Create ``obj`` (with ``dry_run``: only check that the API server would); False if it
        exists already (409)."""
        from kubernetes.client.exceptions import ConflictException

        meta = obj["metadata"]
        try:
            self._request(
                "POST",
                self._path(obj["apiVersion"], obj["kind"], None, meta["namespace"]),
                [("dryRun", "All")] if dry_run else [],
                body=dict(obj),
            )
        except ConflictException:
            return False
        return True

    def patch(self, obj: Mapping[str, Any]) -> None:
        meta = obj["metadata"]
        self._request(
            "PATCH",
            self._path(obj["apiVersion"], obj["kind"], meta["name"], meta["namespace"]),
            body=dict(obj),
            content_type="application/merge-patch+json",
        )

    def patch_status(
        self, api_version: str, kind: str, name: str, namespace: str, status: Mapping[str, Any]
    ) -> None:
        """A JSON merge patch of the object's status subresource."""
        self._request(
            "PATCH",
            self._path(api_version, kind, name, namespace) + "/status",
            body={"status": dict(status)},
            content_type="application/merge-patch+json",
        )

    def apply(self, obj: Mapping[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        """Server-side apply ``obj`` as the operator's one field manager (fields it applied before and
        no longer sends are removed; fields changed by hand are taken back); the object as stored
        (with ``dry_run``: as it would be stored)."""
        meta = obj["metadata"]
        query = [("fieldManager", FIELD_MANAGER), ("force", "true")]
        if dry_run:
            query.append(("dryRun", "All"))
        return self._request(
            "PATCH",
            self._path(obj["apiVersion"], obj["kind"], meta["name"], meta["namespace"]),
            query,
            body=dict(obj),
            content_type="application/apply-patch+yaml",
        )

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
        """Delete the object (gone already: nothing to do). ``uid``/``resource_version``: only that
        object as it was read (the API server answers 409 if it has changed or been replaced)."""
        from kubernetes.client.exceptions import NotFoundException

        body: dict[str, Any] = {"propagationPolicy": "Background"}
        preconditions = {k: v for k, v in (("uid", uid), ("resourceVersion", resource_version)) if v}
        if preconditions:
            body["preconditions"] = preconditions
        with contextlib.suppress(NotFoundException):
            self._request("DELETE", self._path(api_version, kind, name, namespace), body=body)

    def list(self, api_version: str, kind: str, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        """The objects of ``kind`` in ``namespace`` matching ``label_selector``, from the API server's
        watch cache (``resourceVersion=0``: no read through to etcd, milliseconds behind it). Enough
        for a level-based pass: what is written next is checked against the live object (a dry
        run; a GET by name for a child not listed), and the next pass sees what this one missed."""
        query = [("labelSelector", label_selector), ("resourceVersion", "0")]
        listing = self._request("GET", self._path(api_version, kind, None, namespace), query)
        return list(listing.get("items") or [])

    def has_crd(self, name: str) -> bool:
        return self.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", name, None) is not None


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    """Whether ``obj`` names the resource with ``uid`` as its controller."""
    return any(
        ref.get("uid") == uid and ref.get("controller")
        for ref in (obj.get("metadata") or {}).get("ownerReferences") or []
    )


def api_message(exc: Exception) -> str:
    """The API server's own message from a rejected request (its Status object), else str(exc)."""
    import json

    body = getattr(exc, "body", None)
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    try:
        return str(json.loads(body)["message"]) if body else str(exc)
    except (ValueError, KeyError, TypeError):
        return str(body or exc)


def _token(secret: Mapping[str, Any] | None, uid: str, fresh: str) -> str:
    """The admin token: the one in this resource's Secret, else ``fresh`` (the Secret is made)."""
    if secret and owned_by(secret, uid) and (secret.get("data") or {}).get("token"):
        return base64.b64decode(secret["data"]["token"]).decode()
    return fresh


def _inputs(
    settings: OperatorSettings,
    token: str,
    replicas: int | None,
    service_monitor_crd: bool = False,
    pod_monitor_crd: bool = False,
) -> PlanInputs:
    return PlanInputs(
        admin_token=token,
        service_monitor_crd=service_monitor_crd,
        pod_monitor_crd=pod_monitor_crd,
        current_replicas=replicas,
        default_image=settings.runtime_image,
        default_cpu_image=settings.runtime_cpu_image,
        admin_peer=settings.admin_peer,
    )


def _where(obj: Mapping[str, Any]) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


Key = tuple[str, str]  # (kind, name) of a child


@dataclass
class Observed:
    """What one reconcile reads before it plans, in one round of requests side by side."""

    known: dict[Key, dict[str, Any] | None]
    """Objects whose state is known: the children that carry the resource's labels (from one
    listing per child kind) and the admin-token Secret (None: the watch cache does not have it).
    A planned child not here (or None) exists only if its dry run says so (``unresolved``): then it
    is read by name before anything is applied (it may exist without the labels)."""
    listed: dict[Key, tuple[str, dict[str, Any]]]
    """The listed children: (kind, name) -> (apiVersion, object); those the plan no longer has are
    deleted."""
    pods: list[dict[str, Any]]
    """The engine pods (by the same labels)."""
    service_monitor_crd: bool = False
    pod_monitor_crd: bool = False
    checked: list[tuple[Request, Any]] = field(default_factory=list)
    """The checks (dry runs) sent with the reads (a first pass) and their answers."""


def observe(
    cluster: Cluster,
    name: str,
    namespace: str,
    kinds: tuple[tuple[str, str], ...],
    monitoring: bool,
    checks: Sequence[Request] = (),
    cache: Cache | None = None,
) -> Observed:
    """Read what the plan and the status need: every listing, the admin Secret and the monitor CRDs
    at once (the operator's RBAC has no list on Secrets: the Secret is read by name, from the
    watch cache like the listings). ``checks`` (a first pass's dry runs, see ``reconcile``) go in
    the same round; their answers (an exception is an answer) are in ``Observed.checked``.
    ``cache``: the children and pods from the operator's own watches (``arctic_operator.cache``)
    instead of a listing each: then the Secret (and the monitor CRDs) are the only reads."""
    selector = selector_string(labels(name))
    secret_name = f"{name}-admin"
    secret_read: Callable[[], Any] = partial(cluster.get, "v1", "Secret", secret_name, namespace, cached=True)
    crd_reads: list[Callable[[], Any]] = (
        [partial(cluster.has_crd, crd) for crd in MONITOR_CRDS.values()] if monitoring else []
    )
    sent_checks: list[Callable[[], Any]] = [_attempt(partial(send, cluster, c)) for c in checks]
    if cache is None:
        listings: list[Callable[[], Any]] = [
            partial(cluster.list, "v1", "Pod", namespace, selector),
            *(partial(cluster.list, api_version, kind, namespace, selector) for api_version, kind in kinds),
        ]
        secret, pods, *rest = cluster.map(
            lambda read: read(), [secret_read, *listings, *crd_reads, *sent_checks]
        )
        found, rest = rest[: len(kinds)], rest[len(kinds) :]
    else:  # the cache answers at once: only the Secret, the CRDs and the checks go to the API server,
        # and the pods while a workload exists that is not all ready (``status.all_replicas_ready``;
        # no workload, no pods: a first pass creates it)
        found = [cache.children(namespace, name, kind) for _, kind in kinds]
        workloads = [
            c for (_, kind), items in zip(kinds, found, strict=True) if kind in WORKLOADS for c in items
        ]
        pod_reads: list[Callable[[], Any]] = (
            [partial(cluster.list, "v1", "Pod", namespace, selector)]
            if not all(all_replicas_ready(w) for w in workloads)
            else []
        )
        secret, *rest = cluster.map(lambda read: read(), [secret_read, *pod_reads, *crd_reads, *sent_checks])
        pods = rest.pop(0) if pod_reads else []
    crds = rest[: len(crd_reads)] if monitoring else [False, False]
    checked = list(zip(checks, rest[len(crd_reads) :], strict=True))
    listed: dict[Key, tuple[str, dict[str, Any]]] = {}
    for (api_version, kind), items in zip(kinds, found, strict=False):
        for item in items:
            # items of a list carry no apiVersion/kind of their own
            listed[(kind, item["metadata"]["name"])] = (
                api_version,
                {"apiVersion": api_version, "kind": kind, **item},
            )
    known: dict[Key, dict[str, Any] | None] = {key: obj for key, (_, obj) in listed.items()}
    known[("Secret", secret_name)] = secret
    return Observed(known, listed, pods, bool(crds[0]), bool(crds[1]), checked)


def current_of(
    cluster: Cluster, observed: Observed, api_version: str, kind: str, name: str, namespace: str
) -> dict[str, Any] | None:
    """The object as it is now: known from ``observe``, else read by name (and then known)."""
    key = (kind, name)
    if key not in observed.known:
        observed.known[key] = cluster.get(api_version, kind, name, namespace)
    return observed.known[key]


def _comparable(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A child as ``same_object`` compares it (all but its status, resourceVersion, apiVersion, kind)."""
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "resourceVersion"}
    return {**{k: v for k, v in obj.items() if k not in ("status", "apiVersion", "kind")}, "metadata": meta}


def same_object(current: Mapping[str, Any], would_be: Mapping[str, Any]) -> bool:
    """Whether a server-side dry-run apply's answer (``would_be``) leaves ``current`` as it is: every
    field but the status (the workload's controller writes it meanwhile) and the resourceVersion
    (which a write changes) the same, field owners (managedFields) included. Then the real apply
    would be a no-op the API server does not store, and it is not sent. A cached child (its
    ``SUMMARY``) is compared by the digest of what this compares."""
    if SUMMARY in current or SUMMARY in would_be:
        return comparable_digest(current) == comparable_digest(would_be)
    return _comparable(current) == _comparable(would_be)


def comparable_digest(obj: Mapping[str, Any]) -> str:
    """The digest of what ``same_object`` compares (a cached child carries it: ``SUMMARY``)."""
    return str(obj[SUMMARY][1]) if SUMMARY in obj else manifest_digest(_comparable(obj))


#: (resource uid, kind, name) -> (digest of the manifest applied, ``content_digest`` of the child
#: after): children known to be as the plan wants them. The handlers keep one per operator process.
Settled = dict[tuple[str, str, str], tuple[str, Any]]


def first_pass(settled: Settled, uid: str) -> bool:
    """Whether a pass over the resource with ``uid`` is its first in this process: no child known
    settled (a new resource, or the first pass after a restart). Such a pass dry-runs every child
    with its reads (``first_checks``) and creates what is missing."""
    return not any(key[0] == uid for key in settled)


def manifest_digest(obj: Mapping[str, Any]) -> str:
    """A digest of a planned child (what a server-side apply sends)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def content_digest(obj: Mapping[str, Any]) -> str:
    """A digest of what a server-side apply of an unchanged manifest depends on in a live child: the
    object itself (its uid) and the fields this operator owns there (its ``FIELD_MANAGER`` entries
    of managedFields, which the API server keeps: a field it owns that another writer changes or
    removes leaves that entry, any other writer's fields are not in it). While both are the same,
    every field the apply sets holds the value the last apply or dry run left, and the apply would
    change nothing: a hand edit of the operator's fields (``kubectl set env``, ``kubectl scale``, a
    label or owner reference it set) changes the digest; writes that leave the operator's fields
    alone do not (the workload controller's status and its revision annotation, a label someone
    else adds: the apply would keep them as they are). A child with no such entry (managedFields
    cleared, or an API server that keeps none) is digested whole, less its status and the status
    subresource's field owners: then any other write changes it. A cached child (``SUMMARY``) carries
    its digest, computed from the whole object as watched."""
    if SUMMARY in obj:
        return str(obj[SUMMARY][0])
    meta = obj.get("metadata") or {}
    ours = [m for m in meta.get("managedFields") or [] if m.get("manager") == FIELD_MANAGER]
    if ours:
        return manifest_digest({"uid": meta.get("uid"), "managedFields": ours})
    content = _comparable(obj)
    owners = [
        m for m in content["metadata"].pop("managedFields", None) or [] if m.get("subresource") != "status"
    ]
    if owners:
        content["metadata"]["managedFields"] = owners
    return manifest_digest(content)


def _attempt(fn: Callable[[], R]) -> Callable[[], R | Exception]:
    def run() -> R | Exception:
        try:
            return fn()
        except Exception as exc:  # handed back in plan order by the caller
            return exc

    return run


Verb = Literal["get", "dry-run create", "dry-run apply", "create", "apply", "delete"]


@dataclass(frozen=True)
class Request:
    """One request of a reconcile's check or write round: ``verb`` on ``obj`` (a planned child; for
    ``get`` and ``delete`` only its apiVersion, kind, name and namespace count)."""

    verb: Verb
    obj: Mapping[str, Any]

    @property
    def key(self) -> Key:
        return key_of(self.obj)


def key_of(obj: Mapping[str, Any]) -> Key:
    return (str(obj["kind"]), str(obj["metadata"]["name"]))


def create_only(obj: Mapping[str, Any]) -> bool:
    """Whether ``obj`` is only ever created, never rewritten (the admin-token Secret)."""
    return (obj["metadata"].get("annotations") or {}).get(CREATE_ONLY) == "true"


def is_settled(obj: Mapping[str, Any], current: Mapping[str, Any] | None, uid: str, settled: Settled) -> bool:
    """Whether ``obj`` is known to be in place as planned: the manifest an earlier pass applied
    and the child as it left it (all but its status), both unchanged (see ``apply_children``)."""
    known = settled.get((uid, *key_of(obj)))
    return (
        current is not None
        and known is not None
        and known[0] == manifest_digest(obj)
        and known[1] == content_digest(current)
    )


def check_round(
    objects: Sequence[Mapping[str, Any]],
    known: Mapping[Key, Mapping[str, Any] | None],
    uid: str,
    settled: Settled,
) -> list[Request]:
    """The requests a pass sends side by side before it writes anything (none of them writes): a
    server-side dry run of each child that may have to be written, a create for a create-only child
    not known to exist, an apply for any other child not known settled. A child ``observe`` did
    not see is dry-run too; whether its name is taken is decided from that answer (``unresolved``),
    and nothing is written until every answer is in."""
    dry: list[Request] = []
    for obj in objects:
        now = known.get(key_of(obj))
        if create_only(obj):
            if now is None:
                dry.append(Request("dry-run create", obj))
        elif not is_settled(obj, now, uid, settled):
            dry.append(Request("dry-run apply", obj))
    return dry


def absent(obj: Mapping[str, Any], answer: Any) -> bool:
    """Whether the answer to ``obj``'s dry run shows that no object has its name now: a dry-run
    create that would create it (True; False is a 409, it exists), or a dry-run apply that would
    create it. The API server stamps a resourceVersion only on what it stores, and a dry run stores
    nothing: its answer has one only when it applies to an object that exists (that object's)."""
    if create_only(obj):
        return answer is True
    return isinstance(answer, Mapping) and not (answer.get("metadata") or {}).get("resourceVersion")


def replaced(known: Mapping[str, Any] | None, answer: Any) -> bool:
    """Whether a dry-run apply's ``answer`` is about another object than the one listed or cached
    (``known``): the name's object was deleted and made again meanwhile. Then what was seen does
    not count: the child is read by name (``unresolved``) before anything is written."""
    if known is None or not isinstance(answer, Mapping):
        return False
    uid = (answer.get("metadata") or {}).get("uid")
    return bool(uid) and uid != (known.get("metadata") or {}).get("uid")


def unresolved(
    objects: Sequence[Mapping[str, Any]],
    known: Mapping[Key, Mapping[str, Any] | None],
    answers: Mapping[Key, Any],
) -> list[Request]:
    """The reads by name a pass still needs after its checks, before it judges: each planned child
    that neither ``observe`` saw (a listing, the cached Secret) nor its dry run showed ``absent``.
    A name taken by an object without the resource's labels, a listing or cache a moment behind,
    or a child whose dry run failed (is the name taken? that is reported first): rare, so a
    normal pass sends none, where it used to read every unlisted child by name."""
    return [
        Request("get", o)
        for o in objects
        if known.get(key_of(o)) is None and not absent(o, answers.get(key_of(o)))
    ]


def first_checks(objects: Sequence[Mapping[str, Any]], uid: str, settled: Settled) -> list[Request]:
    """A first pass's checks, sent with ``observe``'s reads when the plan needs nothing they read
    but the admin token (see ``reconcile``): every planned child dry-run; None (an empty list) once
    any child is known settled: a later pass reads first, and dry-runs only what may have changed."""
    if any((uid, *key_of(o)) in settled for o in objects):
        return []
    return check_round(objects, {}, uid, settled)


def _same_checks(sent: Sequence[Request], wanted: Sequence[Request]) -> bool:
    """Whether the checks ``sent`` ask what ``wanted`` asks: the same requests, the same manifests
    (a create-only child's content is not compared: it is only created where missing)."""

    def what(r: Request) -> tuple[str, Key, str]:
        return (r.verb, r.key, "" if create_only(r.obj) else manifest_digest(r.obj))

    return [what(r) for r in sent] == [what(r) for r in wanted]


def judge(
    objects: Sequence[Mapping[str, Any]],
    uid: str,
    current: Mapping[Key, Mapping[str, Any] | None],
    answers: Mapping[Key, Any],
) -> tuple[str, str] | None:
    """The problem that stops a pass before any write, from the check round's answers: a name
    taken by an object this resource does not own (``NameConflict``), else a child the API
    server rejects in its dry run (400, 403, 422: ``ChildRejected`` with its message); None when
    every child may be written. Any other failed dry run is raised (the pass is retried)."""
    for obj in objects:
        now = current[key_of(obj)]
        if now is not None and not owned_by(now, uid):
            return (
                "NameConflict",
                f"{_where(obj)} exists and is not owned by this ArcticInferenceService; "
                "rename or delete it (nothing was changed)",
            )
    for obj in objects:
        answer = answers.get(key_of(obj))
        if isinstance(answer, Exception) and getattr(answer, "status", None) in (400, 403, 422):
            return "ChildRejected", f"the API server rejects {_where(obj)}: {api_message(answer)}"
    for obj in objects:
        answer = answers.get(key_of(obj))
        if isinstance(answer, Exception):
            raise answer
    return None


def write_rounds(
    objects: Sequence[Mapping[str, Any]],
    uid: str,
    current: Mapping[Key, Mapping[str, Any] | None],
    answers: Mapping[Key, Any],
    listed: Mapping[Key, tuple[str, Mapping[str, Any]]],
) -> list[list[Request]]:
    """The writes of a pass ``judge`` let through, in rounds (the requests of a round side by side,
    a round only after the one before succeeded): first every create and apply (the admin-token
    Secret with the rest: a pod that mounts it before it exists waits for it), then the deletes of
    listed children of this resource the plan no longer has (only once their replacements are in:
    a Deployment replaced by a StatefulSet is deleted after the StatefulSet is applied). A child
    whose dry run leaves it as it is (or with no dry run: known settled) is not written; a
    create-only child is created only when missing (its dry run answered False: it exists now)."""
    puts: list[Request] = []
    for obj in objects:
        key = key_of(obj)
        before = current[key]
        if create_only(obj):
            if before is None and answers.get(key) is not False:
                puts.append(Request("create", obj))
        else:
            answer = answers.get(key, before)
            if before is None or not isinstance(answer, Mapping) or not same_object(before, answer):
                puts.append(Request("apply", obj))
    wanted = {key_of(o) for o in objects}
    deletes = [
        Request("delete", child)
        for key, (_, child) in listed.items()
        if key not in wanted and owned_by(child, uid)
    ]
    return [r for r in (puts, deletes) if r]


def send(cluster: Cluster, request: Request) -> Any:
    """The one request (the adapter from ``Request`` to ``Cluster``)."""
    obj, meta = request.obj, request.obj["metadata"]
    api_version, kind, name, namespace = obj["apiVersion"], obj["kind"], meta["name"], meta["namespace"]
    if request.verb == "get":
        return cluster.get(api_version, kind, name, namespace)
    if request.verb == "dry-run create":
        return cluster.create(obj, dry_run=True)
    if request.verb == "dry-run apply":
        return cluster.apply(obj, dry_run=True)
    if request.verb == "create":
        return cluster.create(obj)
    if request.verb == "apply":
        return cluster.apply(obj)
    # a delete: a listed (or cached) child the plan no longer has. Read it live first: only that
    # object, still controlled by the same resource, is deleted (preconditions: as read), so a
    # listing or cache that lags never deletes an object replaced or released meanwhile.
    owner = next((r.get("uid") for r in meta.get("ownerReferences") or [] if r.get("controller")), None)
    live = cluster.get(api_version, kind, name, namespace)
    if live is None or owner is None or not owned_by(live, str(owner)):
        return None
    live_meta = live.get("metadata") or {}
    cluster.delete(
        api_version,
        kind,
        name,
        namespace,
        uid=str(live_meta.get("uid") or ""),
        resource_version=str(live_meta.get("resourceVersion") or ""),
    )
    return True


def apply_children(
    cluster: Cluster,
    objects: list[dict[str, Any]],
    uid: str,
    namespace: str,
    observed: Observed,
    settled: Settled | None = None,
) -> tuple[list[str], tuple[str, str] | None, dict[Key, dict[str, Any]]]:
    """Apply the planned children: (what was done per object, problem or None, each applied child
    as stored now).

    Nothing is applied when a child's name is taken by an object this resource does not own
    (``NameConflict``: it is never taken over, so never deleted with the resource) or when the API
    server rejects a child in a server-side dry run (``ChildRejected``, with the server's message),
    the admin-token Secret included. Otherwise every child is server-side applied (the admin-token
    Secret only created, never rewritten; a child whose dry run changes nothing is left as it is)
    and listed children of this resource that the plan no longer has are deleted (switching the
    model cache from emptyDir to PVC replaces the Deployment by a StatefulSet).

    Rounds (``check_round``, ``unresolved``, ``judge``, ``write_rounds``): the dry runs side by side
    (a first pass's were sent with ``observe``'s reads: ``first_checks``); the reads by name of
    children not seen that exist after all or whose dry run failed (normally none); then the
    creates and applies side by side; then the deletes, if any. A first pass waits for one round
    trip after ``observe``'s, a settled resource for none.

    ``settled`` remembers, per child, the manifest last applied (or found in place by a dry run)
    and the child's uid and this operator's field owners then (``content_digest``). A child whose
    manifest and digest are both still the same needs no dry run: it would answer "as it is" (a
    hand edit of a field the operator set changes the digest, and the dry run is made again; the
    workload controller writing its status or its revision annotation, as it does while pods
    start, does not). After a restart it is empty: one dry run each.
    """
    settled = {} if settled is None else settled
    answers: dict[Key, Any] = {}
    if observed.checked and _same_checks(
        [r for r, _ in observed.checked], first_checks(objects, uid, settled)
    ):
        answers = {r.key: result for r, result in observed.checked}  # sent with the reads
    else:
        checks = check_round(objects, observed.known, uid, settled)
        results = cluster.map(lambda r: _attempt(lambda: send(cluster, r))(), checks)
        answers = {r.key: result for r, result in zip(checks, results, strict=True)}
    for obj in objects:
        key = key_of(obj)
        if absent(obj, answers.get(key)) or replaced(observed.known.get(key), answers.get(key)):
            observed.known[key] = None  # live, where a listing or the cache may lag
    reads = unresolved(objects, observed.known, answers)
    # (errors raise: not 404, which is None, so whether the name is taken is not known)
    for request, found in zip(reads, cluster.map(partial(send, cluster), reads), strict=True):
        observed.known[request.key] = found  # live

    current = {key_of(o): observed.known[key_of(o)] for o in objects}
    problem = judge(objects, uid, current, answers)
    if problem is not None:
        return [], problem, {}
    written: dict[tuple[Verb, Key], Any] = {}
    for round_ in write_rounds(objects, uid, current, answers, observed.listed):
        for request, result in zip(round_, cluster.map(partial(send, cluster), round_), strict=True):
            written[(request.verb, request.key)] = result
    done: list[str] = []
    after: dict[Key, dict[str, Any]] = {}
    for obj in objects:
        key = key_of(obj)
        before = current[key]
        if create_only(obj):
            if written.get(("create", key)):
                done.append(f"{_where(obj)}: created")
            elif before is not None:
                done.append(f"{_where(obj)}: unchanged")
            continue
        stored = written.get(("apply", key))
        after[key] = stored if stored is not None else dict(before or {})
        settled[(uid, *key)] = (manifest_digest(obj), content_digest(after[key]))
        if before is None:
            action = "created"
        elif (before.get("metadata") or {}).get("resourceVersion") == after[key]["metadata"].get(
            "resourceVersion"
        ):
            action = "unchanged"
        else:
            action = "updated"
        done.append(f"{_where(obj)}: {action}")
    done += [
        f"{kind}/{name}: deleted"
        for (verb, (kind, name)), result in written.items()
        if verb == "delete" and result
    ]
    return done, None, after


def reconcile(
    body: Mapping[str, Any],
    cluster: Cluster,
    settings: OperatorSettings,
    now: datetime,
    settled: Settled | None = None,
    cache: Cache | None = None,
) -> Outcome:
    """One level-based pass over one ArcticInferenceService (see the module docstring).
    ``settled``: what earlier passes of this process applied (see ``apply_children``); ``cache``:
    the children and pods from the operator's watches, instead of listing them (see ``observe``)."""
    meta = body.get("metadata") or {}
    name, namespace = str(meta.get("name")), str(meta.get("namespace"))
    uid = str(meta.get("uid") or "")
    generation = int(meta.get("generation") or 1)
    previous = body.get("status") or {}
    port = int(((body.get("spec") or {}).get("service") or {}).get("port") or 8000)

    def status_of(
        errors: Any,
        desired: Any,
        workload: Any,
        engine: EngineStatus | None = None,
        pods: Any = (),
        problem: Any = None,
    ) -> dict[str, Any]:
        return compute_status(
            name=name,
            namespace=namespace,
            generation=generation,
            now=now,
            previous=previous,
            errors=errors,
            plan=desired,
            workload=workload,
            service_port=port,
            engine=engine,
            pods=pods,
            apply_problem=problem,
        )

    # The spec is the user's and the status is ours: validate what the user wrote (the status may
    # hold fields of older operator versions).
    errors = validate({k: v for k, v in body.items() if k != "status"})
    if errors:
        message = "; ".join(str(e) for e in errors)
        return Outcome(status_of(errors, None, None), [("Warning", "InvalidSpec", message)])
    resource = parse({k: v for k, v in body.items() if k != "status"})
    kinds = (*CHILD_KINDS, NETWORK_POLICY_KIND) if settings.network_policy else CHILD_KINDS
    settled = {} if settled is None else settled
    fresh_token = secrets.token_urlsafe(32)
    checks: list[Request] = []
    if not plan_reads_replicas(resource.spec) and not settings.monitoring:
        # The plan needs nothing observe reads but the admin token, which only the Secret (created
        # where missing, never rewritten) holds: plan with a fresh one, and a first pass sends its
        # checks with the reads (two round trips, not three). Planned again below with what was
        # read; the checks count only if they are still the ones that plan needs.
        with contextlib.suppress(PlanError):
            guess = plan(resource, _inputs(settings, fresh_token, None))
            for obj in guess.objects:
                obj["metadata"]["namespace"] = namespace
            checks = first_checks(guess.objects, uid, settled)

    observed = observe(cluster, name, namespace, kinds, settings.monitoring, checks, cache)
    kind = workload_kind(resource.spec)
    if plan_reads_replicas(resource.spec):
        # the plan keeps the workload's replicas: read it now if the listing did not show it
        workload_now = current_of(cluster, observed, "apps/v1", kind, name, namespace)
    else:  # without autoscaling the plan does not use it: as listed
        workload_now = observed.known.get((kind, name))
    replicas_now = ((workload_now or {}).get("spec") or {}).get("replicas")
    secret = observed.known[("Secret", f"{name}-admin")]
    inputs = _inputs(
        settings,
        _token(secret, uid, fresh_token),
        None if replicas_now is None else int(replicas_now),
        observed.service_monitor_crd,
        observed.pod_monitor_crd,
    )
    try:
        desired = plan(resource, inputs)
    except PlanError as exc:
        return Outcome(status_of(exc, None, None), [("Warning", "InvalidSpec", str(exc))])
    outcome = Outcome(status={})
    for obj in desired.objects:
        obj["metadata"]["namespace"] = namespace
    outcome.applied, problem, after = apply_children(
        cluster, desired.objects, uid, namespace, observed, settled
    )
    was: dict[str, Any] = next(
        (c for c in previous.get("conditions") or [] if c.get("type") == "Degraded"), {}
    )
    if problem is not None and (was.get("reason"), was.get("message")) != problem:
        outcome.events.append(("Warning", *problem))  # once, not on every resync
    created = [a for a in outcome.applied if a.endswith("created")]
    if created:
        outcome.events.append(("Normal", "Created", ", ".join(a.split(":")[0] for a in created)))
    updated = [a for a in outcome.applied if a.endswith("updated")]
    if updated:
        outcome.events.append(("Normal", "Updated", ", ".join(a.split(":")[0] for a in updated)))
    deleted = [a for a in outcome.applied if a.endswith("deleted")]
    if deleted:
        outcome.events.append(("Normal", "Deleted", ", ".join(a.split(":")[0] for a in deleted)))
    outcome.events += [("Warning", "MonitoringUnavailable", w) for w in desired.warnings]
    # the workload as the apply left it (as read before, when nothing was applied)
    live = after.get((kind, name), observed.known.get((kind, name)))
    pods = observed.pods if live else []
    spec = resource.spec.speculation
    engine = EngineStatus(
        speculation_method=spec.method,
        swift_kv=resource.spec.swift_kv.enabled,
        soft_cap=spec.soft_cap,
        hard_cap=spec.hard_cap,
    )
    outcome.status = status_of(
        None, desired, (live or {}).get("status") or ({} if live else None), engine, pods, problem
    )
    degraded = next(c for c in outcome.status["conditions"] if c["type"] == "Degraded")
    before: dict[str, Any] = next(
        (c for c in previous.get("conditions") or [] if c.get("type") == "Degraded"), {}
    )
    # one Warning when pods start failing (or fail differently), not one per resync
    if degraded["reason"] in POD_FAILURE_REASONS and before.get("reason") != degraded["reason"]:
        outcome.events.append(("Warning", degraded["reason"], degraded["message"]))
    return outcome
