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

``Cluster`` wraps the Kubernetes dynamic client (discovery, so any kind works, ServiceMonitor
included); tests run the same code against the project's emulated API server.
"""

from __future__ import annotations

import base64
import contextlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from arctic_operator.plan import PlanError, PlanInputs, plan, selector_string, workload_kind
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


@dataclass
class Outcome:
    status: dict[str, Any]
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    applied: list[str] = field(default_factory=list)  # "Kind/name: created|updated|unchanged|deleted"


class Cluster:
    """Thin access to the API server through the kubernetes dynamic client."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes.dynamic import DynamicClient

        self.dyn = DynamicClient(api_client)  # type: ignore[no-untyped-call]

    def _resource(self, api_version: str, kind: str) -> Any:
        return self.dyn.resources.get(api_version=api_version, kind=kind)

    def get(self, api_version: str, kind: str, name: str, namespace: str | None) -> dict[str, Any] | None:
        from kubernetes.dynamic.exceptions import NotFoundError

        try:
            obj = self._resource(api_version, kind).get(name=name, namespace=namespace)
        except NotFoundError:
            return None
        result: dict[str, Any] = obj.to_dict()
        return result

    def create(self, obj: Mapping[str, Any]) -> bool:
        """Create ``obj``; False if it exists already (409)."""
        from kubernetes.dynamic.exceptions import ConflictError

        try:
            self._resource(obj["apiVersion"], obj["kind"]).create(
                body=dict(obj), namespace=obj["metadata"]["namespace"]
            )
        except ConflictError:
            return False
        return True

    def patch(self, obj: Mapping[str, Any]) -> None:
        meta = obj["metadata"]
        self._resource(obj["apiVersion"], obj["kind"]).patch(
            body=dict(obj),
            name=meta["name"],
            namespace=meta["namespace"],
            content_type="application/merge-patch+json",
        )

    def apply(self, obj: Mapping[str, Any], *, dry_run: bool = False) -> str:
        """Server-side apply ``obj`` as the operator's one field manager (fields it applied before and
        no longer sends are removed; fields changed by hand are taken back)."""
        meta = obj["metadata"]
        result = self._resource(obj["apiVersion"], obj["kind"]).server_side_apply(
            body=dict(obj),
            name=meta["name"],
            namespace=meta["namespace"],
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
            **({"dry_run": "All"} if dry_run else {}),
        )
        return str(result.metadata.resourceVersion)

    def delete(self, api_version: str, kind: str, name: str, namespace: str) -> None:
        from kubernetes.dynamic.exceptions import NotFoundError

        with contextlib.suppress(NotFoundError):
            self._resource(api_version, kind).delete(
                name=name, namespace=namespace, body={"propagationPolicy": "Background"}
            )

    def list(self, api_version: str, kind: str, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        """The objects of ``kind`` in ``namespace`` matching ``label_selector``."""
        listing = self._resource(api_version, kind).get(namespace=namespace, label_selector=label_selector)
        return list(listing.to_dict().get("items") or [])

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


def _token(cluster: Cluster, name: str, namespace: str, uid: str) -> str:
    existing = cluster.get("v1", "Secret", f"{name}-admin", namespace)
    if existing and owned_by(existing, uid) and (existing.get("data") or {}).get("token"):
        return base64.b64decode(existing["data"]["token"]).decode()
    return secrets.token_urlsafe(32)


def _where(obj: Mapping[str, Any]) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def apply_children(
    cluster: Cluster,
    objects: list[dict[str, Any]],
    uid: str,
    namespace: str,
    selector: str,
    kinds: tuple[tuple[str, str], ...] = CHILD_KINDS,
) -> tuple[list[str], tuple[str, str] | None]:
    """Apply the planned children: (what was done per object, problem or None).

    Nothing is applied when a child's name is taken by an object this resource does not own
    (``NameConflict``: it is never taken over, so never deleted with the resource) or when the API
    server rejects a child in a server-side dry run (``ChildRejected``, with the server's message).
    Otherwise every child is server-side applied (the admin-token Secret only created, never
    rewritten) and children of this resource that the plan no longer has are deleted (switching the
    model cache from emptyDir to PVC replaces the Deployment by a StatefulSet).
    """
    done: list[str] = []
    to_apply: list[tuple[dict[str, Any], str | None]] = []  # (object, its resourceVersion now)
    for obj in objects:
        meta = obj["metadata"]
        current = cluster.get(obj["apiVersion"], obj["kind"], meta["name"], namespace)
        if current is not None and not owned_by(current, uid):
            return done, (
                "NameConflict",
                f"{_where(obj)} exists and is not owned by this ArcticInferenceService; "
                "rename or delete it (nothing was changed)",
            )
        if (meta.get("annotations") or {}).get(CREATE_ONLY) == "true":
            if current is None:
                if cluster.create(obj):
                    done.append(f"{_where(obj)}: created")
            else:
                done.append(f"{_where(obj)}: unchanged")
            continue
        to_apply.append((obj, None if current is None else current["metadata"].get("resourceVersion")))
    from kubernetes.client.exceptions import ApiException

    for obj, _ in to_apply:
        try:
            cluster.apply(obj, dry_run=True)
        except ApiException as exc:
            if exc.status in (400, 403, 422):
                return [], ("ChildRejected", f"the API server rejects {_where(obj)}: {api_message(exc)}")
            raise
    for obj, before in to_apply:
        after = cluster.apply(obj)
        action = "created" if before is None else "unchanged" if after == before else "updated"
        done.append(f"{_where(obj)}: {action}")
    wanted = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for api_version, kind in kinds:
        for child in cluster.list(api_version, kind, namespace, selector):
            child_name = child["metadata"]["name"]
            if (kind, child_name) not in wanted and owned_by(child, uid):
                cluster.delete(api_version, kind, child_name, namespace)
                done.append(f"{kind}/{child_name}: deleted")
    return done, None


def reconcile(
    body: Mapping[str, Any], cluster: Cluster, settings: OperatorSettings, now: datetime
) -> Outcome:
    """One level-based pass over one ArcticInferenceService (see the module docstring)."""
    meta = body.get("metadata") or {}
    name, namespace = str(meta.get("name")), str(meta.get("namespace"))
    uid = str(meta.get("uid") or "")
    generation = int(meta.get("generation") or 1)
    previous = body.get("status") or {}
    port = int(((body.get("spec") or {}).get("service") or {}).get("port") or 8000)

    def status_of(
        errors: Any, desired: Any, workload: Any, engine: Any = None, pods: Any = (), problem: Any = None
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
    inputs = PlanInputs(
        admin_token=_token(cluster, name, namespace, uid),
        service_monitor_crd=settings.monitoring and cluster.has_crd(MONITOR_CRDS["ServiceMonitor"]),
        pod_monitor_crd=settings.monitoring and cluster.has_crd(MONITOR_CRDS["PodMonitor"]),
        current_replicas=_current_replicas(cluster, workload_kind(resource.spec), name, namespace),
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
    kinds = (*CHILD_KINDS, NETWORK_POLICY_KIND) if settings.network_policy else CHILD_KINDS
    outcome.applied, problem = apply_children(
        cluster, desired.objects, uid, namespace, selector_string(desired.selector), kinds
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
    live = cluster.get("apps/v1", workload_kind(resource.spec), name, namespace)
    pods = cluster.list("v1", "Pod", namespace, selector_string(desired.selector)) if live else []
    spec = resource.spec.speculation
    engine: dict[str, Any] = {"speculationMethod": spec.method, "swiftKV": resource.spec.swift_kv.enabled}
    if spec.soft_cap is not None:
        engine["softCap"] = spec.soft_cap
    if spec.hard_cap is not None:
        engine["hardCap"] = spec.hard_cap
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


def _current_replicas(cluster: Cluster, kind: str, name: str, namespace: str) -> int | None:
    live = cluster.get("apps/v1", kind, name, namespace)
    if live is None:
        return None
    replicas = (live.get("spec") or {}).get("replicas")
    return None if replicas is None else int(replicas)
