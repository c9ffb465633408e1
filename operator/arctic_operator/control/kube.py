"""The Kubernetes side of one control pass: read the pods, the workload and the admin token, run
``ServiceController.tick``, write the workload's replicas, the status fields and the events.

``control_pass`` is what the kopf daemon in ``handlers`` calls every interval for a resource with
``spec.autoscaling`` or ``spec.speculation.capController.enabled``. It never writes the resource's
spec: the replica count goes to the Deployment/StatefulSet's ``spec.replicas`` (``plan`` keeps
the workload's current count within [minReplicas, maxReplicas], so reconcile does not undo it),
and the per-pod picture goes to ``status.autoscaling``, ``status.capController`` and
``status.pods``.

The ``kubernetes`` client is synchronous: every API call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter, Gauge

from arctic_operator.api import ArcticInferenceServiceSpec
from arctic_operator.control.cap import CapPolicy
from arctic_operator.control.controller import (
    CONTROL_STATUS_FIELDS,
    ControllerConfig,
    ServiceController,
    TickResult,
    pod_targets,
)
from arctic_operator.control.cost import DEFAULT_COSTS, VerifyCosts
from arctic_operator.control.replicas import ReplicaPolicy
from arctic_operator.plan import labels, selector_string, workload_kind
from arctic_operator.reconcile import Cluster
from arctic_operator.status import merge_patch
from arctic_operator.validation import parse, validate

#: The status fields the control loop owns (reconcile writes the others).
STATUS_FIELDS = CONTROL_STATUS_FIELDS

TICKS = Counter(
    "arctic_operator_control_ticks_total",
    "Control-loop passes over ArcticInferenceServices, by result (ok, skipped, error).",
    ["result"],
)
REPLICA_CHANGES = Counter(
    "arctic_operator_replica_changes_total",
    "Replica counts changed by the operator's autoscaler, by direction (up, down).",
    ["direction"],
)
CAP_PUSHES = Counter(
    "arctic_operator_cap_pushes_total",
    "Speculation caps set through the runtime's admin API, by result (ok, error).",
    ["result"],
)
SCRAPE_ERRORS = Counter(
    "arctic_operator_scrape_errors_total", "Engine /metrics scrapes that failed or lacked a required series."
)


# Per service (and pod): what the Grafana dashboard (charts/arctic-serve/files/grafana) shows.
SERVICE = ["namespace", "service"]
POD = ["namespace", "service", "pod"]
DESIRED_REPLICAS = Gauge(
    "arctic_operator_desired_replicas", "Replicas the autoscaler wants for the service.", SERVICE
)
READY_REPLICAS = Gauge("arctic_operator_ready_replicas", "Ready engine pods of the service.", SERVICE)
REPLICA_DECISIONS = Counter(
    "arctic_operator_replica_decisions_total",
    "Autoscaler decisions (one per pass) by reason (ScaleUp, Stabilizing, WithinTolerance, ...).",
    [*SERVICE, "reason"],
)
CONFIGURED_SOFT_CAP = Gauge(
    "arctic_operator_configured_soft_cap", "Soft cap the cap controller set for the pod.", POD
)
CONFIGURED_HARD_CAP = Gauge(
    "arctic_operator_configured_hard_cap", "Hard cap the cap controller set for the pod.", POD
)
BREAK_EVEN_BATCH = Gauge(
    "arctic_operator_break_even_batch",
    "Running requests up to which drafting pays on the pod, by the cost model and its acceptance.",
    POD,
)
CAP_DECISIONS = Counter(
    "arctic_operator_cap_decisions_total",
    "Cap-controller decisions (one per pod per pass) by reason (Raised, Lowered, NotPaying, ...).",
    [*POD, "reason"],
)
_POD_SERIES = (CONFIGURED_SOFT_CAP, CONFIGURED_HARD_CAP, BREAK_EVEN_BATCH)
_pods_seen: dict[tuple[str, str], set[str]] = {}


def export_tick(namespace: str, service: str, tick: TickResult, ready: int) -> None:
    """Publish one pass's decisions as the operator's metrics; drop the series of pods gone."""
    if tick.replicas is not None:
        DESIRED_REPLICAS.labels(namespace, service).set(tick.replicas.desired)
        REPLICA_DECISIONS.labels(namespace, service, tick.replicas.reason).inc()
    READY_REPLICAS.labels(namespace, service).set(ready)
    pods = set(tick.caps)
    for pod, decision in tick.caps.items():
        if decision.soft_cap is not None and decision.hard_cap is not None:
            CONFIGURED_SOFT_CAP.labels(namespace, service, pod).set(decision.soft_cap)
            CONFIGURED_HARD_CAP.labels(namespace, service, pod).set(decision.hard_cap)
        if "breakEvenBatch" in decision.inputs:
            BREAK_EVEN_BATCH.labels(namespace, service, pod).set(decision.inputs["breakEvenBatch"])
        CAP_DECISIONS.labels(namespace, service, pod, decision.reason).inc()
    for gone in _pods_seen.get((namespace, service), set()) - pods:
        for gauge in _POD_SERIES:
            with contextlib.suppress(KeyError):  # never set for that pod
                gauge.remove(namespace, service, gone)
    _pods_seen[(namespace, service)] = pods


@dataclass(frozen=True)
class ControlTuning:
    """Operator-wide settings of the control loop beyond the spec (tests shorten them)."""

    config: ControllerConfig = field(default_factory=ControllerConfig)
    """Windows, timeouts, concurrency, history length."""
    replica_overrides: Mapping[str, Any] = field(default_factory=dict)
    """ReplicaPolicy fields replaced after ``from_spec`` (e.g. scale_up_cooldown_s)."""
    cap_overrides: Mapping[str, Any] = field(default_factory=dict)
    """CapPolicy fields replaced after ``from_spec`` (e.g. dwell_s)."""
    costs: VerifyCosts = DEFAULT_COSTS
    """Verify-cost curves (settings' ARCTIC_OPERATOR_COST_FILE)."""
    status_refresh_s: float = 30.0
    """A status patch that would only move numbers (loads, acceptance, the messages quoting them)
    waits this long after the previous patch; reasons, decisions, caps and errors go out at once.
    Keeps the resource quiet enough for kopf's idle-gated resync timer and for watchers."""


def wants_control(spec: Mapping[str, Any]) -> bool:
    """Whether a resource's (raw) spec turns on the control loop."""
    speculation = spec.get("speculation") or {}
    return bool(spec.get("autoscaling")) or bool((speculation.get("capController") or {}).get("enabled"))


def policies(
    spec: ArcticInferenceServiceSpec, tuning: ControlTuning
) -> tuple[ReplicaPolicy | None, CapPolicy | None]:
    """The policies a parsed spec asks for (None: that half is off)."""
    replica = None
    if spec.autoscaling is not None:
        replica = dataclasses.replace(
            ReplicaPolicy.from_spec(spec.autoscaling, tuning.costs), **tuning.replica_overrides
        )
    cap = None
    if spec.speculation.cap_controller.enabled and spec.speculation.method != "none":
        cap = dataclasses.replace(CapPolicy.from_spec(spec.speculation, tuning.costs), **tuning.cap_overrides)
    return replica, cap


#: A JSON merge patch turning the old status fields into the new ones (nulls remove what is gone).
status_patch = merge_patch


#: Status keys whose values move with every scrape (numbers, and the messages that quote them).
VOLATILE_KEYS = frozenset(
    {"waitingRequests", "runningRequests", "kvCacheUsage", "running", "waiting", "acceptanceRate"}
    | {"message", "capMessage"}
)


def _masked(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: None if k in VOLATILE_KEYS else _masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


def same_but_numbers(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether ``old`` and ``new`` differ at most in VOLATILE_KEYS (and whether they are present)."""
    return bool(_masked(old) == _masked(new))


# ---- API access (sync; run in threads) -----------------------------------------------------


def _list_pods(cluster: Cluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    return cluster.list("v1", "Pod", namespace, selector)


def _admin_token(cluster: Cluster, name: str, namespace: str) -> str | None:
    secret = cluster.get("v1", "Secret", f"{name}-admin", namespace)
    raw = ((secret or {}).get("data") or {}).get("token")
    if not raw:
        return None
    return base64.b64decode(raw).decode().strip() or None


def _patch_replicas(
    cluster: Cluster, kind: str, name: str, namespace: str, replicas: int, lock: threading.Lock
) -> None:
    with lock:  # not while reconcile is between reading the current count and applying its plan
        cluster.patch(
            {
                "apiVersion": "apps/v1",
                "kind": kind,
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"replicas": replicas},
            }
        )


def _patch_status(
    cluster: Cluster, api_version: str, kind: str, name: str, namespace: str, patch: Mapping[str, Any]
) -> None:
    resource = cluster.dyn.resources.get(api_version=api_version, kind=kind)
    resource.status.patch(
        body={"status": dict(patch)},
        name=name,
        namespace=namespace,
        content_type="application/merge-patch+json",
    )


# ---- one pass -----------------------------------------------------------------------------


@dataclass
class PassOutcome:
    """What a pass did (None tick: skipped, ``skipped`` says why)."""

    tick: TickResult | None = None
    skipped: str | None = None
    replicas_patched: int | None = None
    status_patched: bool = False


async def control_pass(
    cluster: Cluster,
    body: Mapping[str, Any],
    controller: ServiceController,
    tuning: ControlTuning,
    lock: threading.Lock,
    now: float,
    post_event: Callable[[str, str, str], None],
) -> PassOutcome:
    """One interval of the control loop for one resource (see the module docstring)."""
    meta = body.get("metadata") or {}
    name, namespace = str(meta.get("name")), str(meta.get("namespace"))
    without_status = {k: v for k, v in body.items() if k != "status"}
    if validate(without_status):
        TICKS.labels(result="skipped").inc()
        return PassOutcome(skipped="the spec is invalid (see the Degraded condition)")
    spec = parse(without_status).spec
    controller.replica_policy, controller.cap_policy = policies(spec, tuning)
    kind = workload_kind(spec)
    workload = await asyncio.to_thread(cluster.get, "apps/v1", kind, name, namespace)
    if workload is None:
        TICKS.labels(result="skipped").inc()
        return PassOutcome(skipped=f"{kind} {name} does not exist yet")
    current = int((workload.get("spec") or {}).get("replicas") or 0)
    pods = await asyncio.to_thread(_list_pods, cluster, namespace, selector_string(labels(name)))
    targets, loading = pod_targets(pods, spec.service.port)
    if controller.cap_policy is not None:
        controller.admin_token = await asyncio.to_thread(_admin_token, cluster, name, namespace)
    tick = await controller.tick(targets, current, loading, now)
    outcome = PassOutcome(tick=tick)
    export_tick(namespace, name, tick, sum(1 for t in targets if t.ready))
    SCRAPE_ERRORS.inc(len(tick.scrape_errors))
    for result in tick.pushed.values():
        CAP_PUSHES.labels(result="ok" if result == "ok" else "error").inc()
    decision = tick.replicas
    if decision is not None and decision.changed:
        await asyncio.to_thread(_patch_replicas, cluster, kind, name, namespace, decision.desired, lock)
        outcome.replicas_patched = decision.desired
        REPLICA_CHANGES.labels(direction="up" if decision.desired > decision.current else "down").inc()
    live = body.get("status") or {}
    before = {k: live[k] for k in STATUS_FIELDS if k in live}
    patch = status_patch(before, tick.status)
    fresh = (
        controller.status_written is not None and now - controller.status_written < tuning.status_refresh_s
    )
    if patch and not (fresh and same_but_numbers(before, tick.status)):
        controller.status_written = now
        api_version = str(body.get("apiVersion"))
        await asyncio.to_thread(
            _patch_status, cluster, api_version, str(body.get("kind")), name, namespace, patch
        )
        outcome.status_patched = True
    for type_, reason, message in tick.events:
        post_event(type_, reason, message[:1024])
    TICKS.labels(result="ok").inc()
    return outcome


async def clear_status(cluster: Cluster, body: Mapping[str, Any]) -> None:
    """Remove the control loop's status fields (the spec turned it off). The one status patch not
    dumped from the models: a merge patch of nulls, which removes each field the loop wrote."""
    meta = body.get("metadata") or {}
    live = body.get("status") or {}
    patch = {k: None for k in STATUS_FIELDS if k in live}
    if patch:
        await asyncio.to_thread(
            _patch_status,
            cluster,
            str(body.get("apiVersion")),
            str(body.get("kind")),
            str(meta.get("name")),
            str(meta.get("namespace")),
            patch,
        )
