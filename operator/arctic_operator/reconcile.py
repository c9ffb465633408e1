"""Apply a plan to the cluster and observe the result: the operator's only Kubernetes I/O.

``reconcile(body, cluster, settings, now)`` is level-based: it reads the resource, validates it,
plans every child object, creates what is missing and patches what differs (a hand-edited
Deployment is put back), reads the workload's status and returns the resource's new status plus the
events to post. It never writes the resource's spec. Running it twice, or after a restart in the
middle of a previous run, creates nothing twice: children have fixed names, so a second create is a
409 that turns into a patch.

``Cluster`` wraps the Kubernetes dynamic client (discovery, so any kind works, ServiceMonitor
included); tests run the same code against the project's emulated API server.
"""

from __future__ import annotations

import base64
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


@dataclass
class Outcome:
    status: dict[str, Any]
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    applied: list[str] = field(default_factory=list)  # "Kind/name: created|patched|unchanged"


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

    def list(self, api_version: str, kind: str, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        """The objects of ``kind`` in ``namespace`` matching ``label_selector``."""
        listing = self._resource(api_version, kind).get(namespace=namespace, label_selector=label_selector)
        return list(listing.to_dict().get("items") or [])

    def has_crd(self, name: str) -> bool:
        return self.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", name, None) is not None


def _differs(desired: Any, actual: Any) -> bool:
    """Whether applying ``desired`` as a merge patch would change ``actual`` (fields the API server
    adds, like defaults, do not count)."""
    if isinstance(desired, Mapping):
        if not isinstance(actual, Mapping):
            return True
        return any(_differs(v, actual.get(k)) for k, v in desired.items())
    if isinstance(desired, list):
        if not isinstance(actual, list) or len(desired) != len(actual):
            return True
        return any(_differs(d, a) for d, a in zip(desired, actual, strict=True))
    return bool(desired != actual)


def _token(cluster: Cluster, name: str, namespace: str) -> str:
    existing = cluster.get("v1", "Secret", f"{name}-admin", namespace)
    if existing and (existing.get("data") or {}).get("token"):
        return base64.b64decode(existing["data"]["token"]).decode()
    return secrets.token_urlsafe(32)


def _apply(cluster: Cluster, obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    where = f"{obj['kind']}/{meta['name']}"
    current = cluster.get(obj["apiVersion"], obj["kind"], meta["name"], meta["namespace"])
    if current is None:
        return f"{where}: created" if cluster.create(obj) else f"{where}: exists"
    if (meta.get("annotations") or {}).get(CREATE_ONLY) == "true":  # the admin-token Secret
        return f"{where}: unchanged"
    desired = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
    if not _differs(desired, current):
        return f"{where}: unchanged"
    cluster.patch(obj)
    return f"{where}: patched"


def reconcile(
    body: Mapping[str, Any], cluster: Cluster, settings: OperatorSettings, now: datetime
) -> Outcome:
    """One level-based pass over one ArcticInferenceService (see the module docstring)."""
    meta = body.get("metadata") or {}
    name, namespace = str(meta.get("name")), str(meta.get("namespace"))
    generation = int(meta.get("generation") or 1)
    previous = body.get("status") or {}
    port = int(((body.get("spec") or {}).get("service") or {}).get("port") or 8000)

    def status_of(
        errors: Any, desired: Any, workload: Any, engine: Any = None, pods: Any = ()
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
        )

    # The spec is the user's and the status is ours: validate what the user wrote (the status may
    # hold fields of older operator versions).
    errors = validate({k: v for k, v in body.items() if k != "status"})
    if errors:
        message = "; ".join(str(e) for e in errors)
        return Outcome(status_of(errors, None, None), [("Warning", "InvalidSpec", message)])
    resource = parse({k: v for k, v in body.items() if k != "status"})
    inputs = PlanInputs(
        admin_token=_token(cluster, name, namespace),
        service_monitor_crd=settings.monitoring and cluster.has_crd(MONITOR_CRDS["ServiceMonitor"]),
        pod_monitor_crd=settings.monitoring and cluster.has_crd(MONITOR_CRDS["PodMonitor"]),
        current_replicas=_current_replicas(cluster, workload_kind(resource.spec), name, namespace),
        default_image=settings.runtime_image,
        default_cpu_image=settings.runtime_cpu_image,
    )
    try:
        desired = plan(resource, inputs)
    except PlanError as exc:
        return Outcome(status_of(exc, None, None), [("Warning", "InvalidSpec", str(exc))])
    outcome = Outcome(status={})
    for obj in desired.objects:
        obj["metadata"]["namespace"] = namespace
        outcome.applied.append(_apply(cluster, obj))
    created = [a for a in outcome.applied if a.endswith("created")]
    if created:
        outcome.events.append(("Normal", "Created", ", ".join(a.split(":")[0] for a in created)))
    patched = [a for a in outcome.applied if a.endswith("patched")]
    if patched:
        outcome.events.append(("Normal", "Updated", ", ".join(a.split(":")[0] for a in patched)))
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
        None, desired, (live or {}).get("status") or ({} if live else None), engine, pods
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
