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

Requests per pass (issue 15: the operator at 1,000 resources): one round of reads side by side
(the children by their labels, one listing per kind; the admin Secret; the pods), then a dry run per
child that may have changed side by side, then only the writes something needs: a settled resource
costs those reads and nothing else. ``Cluster`` sends plain JSON requests through the Kubernetes
client (the dynamic client's discovery gives the paths, so any kind works, ServiceMonitor
included); tests run the same code against the project's emulated API server and a recording fake
(tests/operator/test_reconcile.py).
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
from typing import Any, TypeVar

from arctic_operator.api import EngineStatus
from arctic_operator.plan import PlanError, PlanInputs, labels, plan, selector_string, workload_kind
from arctic_operator.settings import OperatorSettings
from arctic_operator.status import POD_FAILURE_REASONS, compute_status
from arctic_operator.validation import parse, validate

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
#: With network policies on (the chart grants their RBAC only then), also this kind.
NETWORK_POLICY_KIND = ("networking.k8s.io/v1", "NetworkPolicy")

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

    def get(self, api_version: str, kind: str, name: str, namespace: str | None) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import NotFoundException

        try:
            return self._request("GET", self._path(api_version, kind, name, namespace))
        except NotFoundException:
            return None

    def create(self, obj: Mapping[str, Any]) -> bool:
        """Create ``obj``; False if it exists already (409)."""
        from kubernetes.client.exceptions import ConflictException

        meta = obj["metadata"]
        try:
            self._request(
                "POST", self._path(obj["apiVersion"], obj["kind"], None, meta["namespace"]), body=dict(obj)
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

    def delete(self, api_version: str, kind: str, name: str, namespace: str) -> None:
        from kubernetes.client.exceptions import NotFoundException

        with contextlib.suppress(NotFoundException):
            self._request(
                "DELETE",
                self._path(api_version, kind, name, namespace),
                body={"propagationPolicy": "Background"},
            )

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


def _token(secret: Mapping[str, Any] | None, uid: str) -> str:
    """The admin token: the one in this resource's Secret, else a new one (the Secret is made)."""
    if secret and owned_by(secret, uid) and (secret.get("data") or {}).get("token"):
        return base64.b64decode(secret["data"]["token"]).decode()
    return secrets.token_urlsafe(32)


def _where(obj: Mapping[str, Any]) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


Key = tuple[str, str]  # (kind, name) of a child


@dataclass
class Observed:
    """What one reconcile reads before it plans, in one round of requests side by side."""

    known: dict[Key, dict[str, Any] | None]
    """Objects whose state is known: the children that carry the resource's labels (from one
    listing per child kind) and the admin-token Secret (None: it does not exist). A planned child
    not here is read by name before anything is applied (it may exist without the labels)."""
    listed: dict[Key, tuple[str, dict[str, Any]]]
    """The listed children: (kind, name) -> (apiVersion, object); those the plan no longer has are
    deleted."""
    pods: list[dict[str, Any]]
    """The engine pods (by the same labels)."""
    service_monitor_crd: bool = False
    pod_monitor_crd: bool = False


def observe(
    cluster: Cluster, name: str, namespace: str, kinds: tuple[tuple[str, str], ...], monitoring: bool
) -> Observed:
    """Read what the plan and the status need: every listing, the admin Secret and the monitor CRDs
    at once (the operator's RBAC has no list on Secrets: the Secret is read by name)."""
    selector = selector_string(labels(name))
    secret_name = f"{name}-admin"
    reads: list[Callable[[], Any]] = [
        partial(cluster.get, "v1", "Secret", secret_name, namespace),
        partial(cluster.list, "v1", "Pod", namespace, selector),
        *(partial(cluster.list, api_version, kind, namespace, selector) for api_version, kind in kinds),
    ]
    if monitoring:
        reads += [partial(cluster.has_crd, crd) for crd in MONITOR_CRDS.values()]
    secret, pods, *rest = cluster.map(lambda read: read(), reads)
    listed: dict[Key, tuple[str, dict[str, Any]]] = {}
    for (api_version, kind), items in zip(kinds, rest, strict=False):
        for item in items:
            # items of a list carry no apiVersion/kind of their own
            listed[(kind, item["metadata"]["name"])] = (
                api_version,
                {"apiVersion": api_version, "kind": kind, **item},
            )
    known: dict[Key, dict[str, Any] | None] = {key: obj for key, (_, obj) in listed.items()}
    known[("Secret", secret_name)] = secret
    crds = rest[len(kinds) :] if monitoring else [False, False]
    return Observed(known, listed, pods, bool(crds[0]), bool(crds[1]))


def current_of(
    cluster: Cluster, observed: Observed, api_version: str, kind: str, name: str, namespace: str
) -> dict[str, Any] | None:
    """The object as it is now: known from ``observe``, else read by name (and then known)."""
    key = (kind, name)
    if key not in observed.known:
        observed.known[key] = cluster.get(api_version, kind, name, namespace)
    return observed.known[key]


def _comparable(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "resourceVersion"}
    return {**{k: v for k, v in obj.items() if k not in ("status", "apiVersion", "kind")}, "metadata": meta}


def same_object(current: Mapping[str, Any], would_be: Mapping[str, Any]) -> bool:
    """Whether a server-side dry-run apply's answer (``would_be``) leaves ``current`` as it is: every
    field but the status (the workload's controller writes it meanwhile) and the resourceVersion
    (which a write changes) the same, field owners (managedFields) included. Then the real apply
    would be a no-op the API server does not store, and it is not sent."""
    return _comparable(current) == _comparable(would_be)


#: (resource uid, kind, name) -> (digest of the manifest applied, the child's resourceVersion after):
#: children known to be as the plan wants them. The handlers keep one per operator process.
Settled = dict[tuple[str, str, str], tuple[str, Any]]


def manifest_digest(obj: Mapping[str, Any]) -> str:
    """A digest of a planned child (what a server-side apply sends)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _attempt(fn: Callable[[], R]) -> Callable[[], R | Exception]:
    def run() -> R | Exception:
        try:
            return fn()
        except Exception as exc:  # handed back in plan order by the caller
            return exc

    return run


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
    server rejects a child in a server-side dry run (``ChildRejected``, with the server's message).
    Otherwise every child is server-side applied (the admin-token Secret only created, never
    rewritten; a child whose dry run changes nothing is left as it is) and listed children of this
    resource that the plan no longer has are deleted (switching the model cache from emptyDir to
    PVC replaces the Deployment by a StatefulSet). Requests of one step go side by side.

    ``settled`` remembers, per child, the manifest last applied (or found in place by a dry run)
    and the child's resourceVersion then. A child whose manifest and resourceVersion are both still
    the same needs no dry run: nothing about it changed on either side, so the dry run would answer
    "as it is" (a hand edit, or the workload controller writing its status, changes the
    resourceVersion, and the dry run is made again). After a restart it is empty: one dry run each.
    """
    from kubernetes.client.exceptions import ApiException

    unread = [o for o in objects if (o["kind"], o["metadata"]["name"]) not in observed.known]
    cluster.map(
        lambda o: current_of(cluster, observed, o["apiVersion"], o["kind"], o["metadata"]["name"], namespace),
        unread,
    )
    current = {
        (o["kind"], o["metadata"]["name"]): observed.known[(o["kind"], o["metadata"]["name"])]
        for o in objects
    }
    for obj in objects:
        now = current[(obj["kind"], obj["metadata"]["name"])]
        if now is not None and not owned_by(now, uid):
            return (
                [],
                (
                    "NameConflict",
                    f"{_where(obj)} exists and is not owned by this ArcticInferenceService; "
                    "rename or delete it (nothing was changed)",
                ),
                {},
            )
    done: list[str] = []
    create_only = [o for o in objects if (o["metadata"].get("annotations") or {}).get(CREATE_ONLY) == "true"]
    to_apply = [o for o in objects if o not in create_only]
    missing = [o for o in create_only if current[(o["kind"], o["metadata"]["name"])] is None]
    for obj, made in zip(missing, cluster.map(cluster.create, missing), strict=True):
        if made:
            done.append(f"{_where(obj)}: created")
    done += [f"{_where(o)}: unchanged" for o in create_only if o not in missing]
    settled = {} if settled is None else settled
    digests = {(o["kind"], o["metadata"]["name"]): manifest_digest(o) for o in to_apply}

    def known_settled(obj: dict[str, Any]) -> bool:
        key = (obj["kind"], obj["metadata"]["name"])
        now = current[key]
        rv = None if now is None else (now.get("metadata") or {}).get("resourceVersion")
        return rv is not None and settled.get((uid, *key)) == (digests[key], rv)

    unsure = [o for o in to_apply if not known_settled(o)]
    dry_answers = cluster.map(lambda o: _attempt(lambda: cluster.apply(o, dry_run=True))(), unsure)
    answer_of = {(o["kind"], o["metadata"]["name"]): a for o, a in zip(unsure, dry_answers, strict=True)}
    dry = [
        answer_of.get((o["kind"], o["metadata"]["name"]), current[(o["kind"], o["metadata"]["name"])])
        for o in to_apply
    ]
    for obj, answer in zip(to_apply, dry, strict=True):
        if isinstance(answer, ApiException) and answer.status in (400, 403, 422):
            return [], ("ChildRejected", f"the API server rejects {_where(obj)}: {api_message(answer)}"), {}
        if isinstance(answer, Exception):
            raise answer
    after: dict[Key, dict[str, Any]] = {}
    changing = []
    for obj, answer in zip(to_apply, dry, strict=True):
        key = (obj["kind"], obj["metadata"]["name"])
        before = current[key]
        if before is not None and isinstance(answer, dict) and same_object(before, answer):
            after[key] = before
        else:
            changing.append(obj)
    for obj, stored in zip(changing, cluster.map(cluster.apply, changing), strict=True):
        after[(obj["kind"], obj["metadata"]["name"])] = stored
    for (kind, name), stored in after.items():
        settled[(uid, kind, name)] = (digests[(kind, name)], stored["metadata"].get("resourceVersion"))
    for obj in to_apply:
        key = (obj["kind"], obj["metadata"]["name"])
        before = current[key]
        if before is None:
            action = "created"
        elif (before.get("metadata") or {}).get("resourceVersion") == after[key]["metadata"].get(
            "resourceVersion"
        ):
            action = "unchanged"
        else:
            action = "updated"
        done.append(f"{_where(obj)}: {action}")
    wanted = set(current)
    doomed = [
        (api_version, kind, name)
        for (kind, name), (api_version, child) in observed.listed.items()
        if (kind, name) not in wanted and owned_by(child, uid)
    ]
    cluster.map(lambda d: cluster.delete(d[0], d[1], d[2], namespace), doomed)
    done += [f"{kind}/{name}: deleted" for _, kind, name in doomed]
    return done, None, after


def reconcile(
    body: Mapping[str, Any],
    cluster: Cluster,
    settings: OperatorSettings,
    now: datetime,
    settled: Settled | None = None,
) -> Outcome:
    """One level-based pass over one ArcticInferenceService (see the module docstring).
    ``settled``: what earlier passes of this process applied (see ``apply_children``)."""
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
    observed = observe(cluster, name, namespace, kinds, settings.monitoring)
    kind = workload_kind(resource.spec)
    workload_now = current_of(cluster, observed, "apps/v1", kind, name, namespace)
    replicas_now = ((workload_now or {}).get("spec") or {}).get("replicas")
    secret = observed.known[("Secret", f"{name}-admin")]
    inputs = PlanInputs(
        admin_token=_token(secret, uid),
        service_monitor_crd=observed.service_monitor_crd,
        pod_monitor_crd=observed.pod_monitor_crd,
        current_replicas=None if replicas_now is None else int(replicas_now),
        default_image=settings.runtime_image,
        default_cpu_image=settings.runtime_cpu_image,
        admin_peer=settings.admin_peer,
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
    live = after.get((kind, name), workload_now)
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
