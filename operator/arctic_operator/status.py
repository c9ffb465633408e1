"""Pure status: what the operator observed -> the resource's ``status`` (conditions, counts, endpoint).

``compute_status`` is called after every reconcile with plain data: the resource's generation, the
problems found in its spec (``validate()`` errors or a ``PlanError``), the plan that was applied and
the workload's own status as the API server returned it. It returns the whole status object, built
as the typed ``ArcticInferenceServiceStatus`` (the model the CRD's status schema is generated from)
and dumped to JSON; the kopf layer patches what changed onto the status subresource
(``reconcile_status_patch``). Conditions keep their ``lastTransitionTime``
while their status does not change (as metav1.Condition requires), so a status patch on every
timer tick does not look like a flapping resource.

Conditions (one each; reasons are CamelCase, messages are for a person):

* ``Degraded``: True with ``InvalidSpec`` when the spec cannot be served as written (the message
  lists every field and what is allowed), ``RolloutStuck`` when the workload reports that its
  rollout exceeded its progress deadline, ``EngineCrashLooping`` when an engine container keeps
  restarting (the message names the pod, the restarts and how the container last ended, e.g.
  ``OOMKilled``), ``ImagePullFailing`` when a pod cannot pull its image, ``Unschedulable`` when the
  scheduler finds no node for a pod (its message says why, e.g. ``Insufficient nvidia.com/gpu``),
  ``PodsFailing`` for other container start errors or failed pods, ``PodsRefused`` when the workload
  cannot create its pods at all (Pod Security admission, a quota, a missing PriorityClass),
  ``NameConflict`` when a child's name is taken by an object the resource does not own (nothing is
  applied or taken over), ``ChildRejected`` when the API server rejects a child (its message); else
  False (``AsExpected``). Pod problems are read from
  the pods themselves, so they show within one resync, long before a rollout's deadline.
* ``Progressing``: True while the workload is being created, rolled out or scaled (``Creating``,
  ``RollingOut``, ``Scaling``, ``ModelLoading`` while replicas exist but are not ready yet); else
  False (``Stable``).
* ``Ready``: True when at least the desired number of replicas is ready on the current spec
  (``ReplicasReady``) or zero replicas are asked for (``ScaledToZero``, so GitOps tools see it
  healthy); False with ``NoReadyReplicas`` / ``NotEnoughReplicas`` / ``InvalidSpec``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError

from arctic_operator.api import ArcticInferenceServiceStatus, Condition, ConditionType, EngineStatus
from arctic_operator.plan import Plan, PlanError, selector_string
from arctic_operator.validation import FieldError

#: Longest condition message the CRD accepts (Condition.message's bound).
_MAX_MESSAGE = 32_768
_TIME = TypeAdapter(datetime)


def kube_time(when: datetime) -> datetime:
    """``when`` as Kubernetes keeps a metav1.Time: UTC, whole seconds (a naive datetime is taken
    as UTC). The models dump it as ``2026-11-25T12:00:00Z``."""
    utc = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    return utc.replace(microsecond=0)


def _stored_time(value: Any) -> datetime | None:
    """A ``lastTransitionTime`` read back from the API server, or None if it is not a time."""
    try:
        return kube_time(_TIME.validate_python(value))
    except ValidationError:
        return None


def _condition(
    type_: ConditionType,
    status: bool,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
    previous: Sequence[Mapping[str, Any]],
) -> Condition:
    value: Literal["True", "False"] = "True" if status else "False"
    old = next((c for c in previous if c.get("type") == type_), None)
    since = _stored_time(old.get("lastTransitionTime")) if old and old.get("status") == value else None
    return Condition(
        type=type_,
        status=value,
        reason=reason,
        message=message[:_MAX_MESSAGE],
        last_transition_time=since or now,
        observed_generation=generation,
    )


def _problems(errors: Sequence[FieldError] | PlanError | None) -> str | None:
    if errors is None:
        return None
    if isinstance(errors, PlanError):
        return str(errors)
    if not errors:
        return None
    return "; ".join(str(e) for e in errors)


def _rollout_stuck(workload: Mapping[str, Any]) -> str | None:
    for c in workload.get("conditions") or []:
        if c.get("type") == "Progressing" and c.get("reason") == "ProgressDeadlineExceeded":
            return str(c.get("message") or "the rollout exceeded its progress deadline")
    return None


def _replica_failure(workload: Mapping[str, Any]) -> str | None:
    """The workload controller's own report that it cannot create pods (a quota, Pod Security
    admission, a missing PriorityClass): its ReplicaFailure condition's message."""
    for c in workload.get("conditions") or []:
        if c.get("type") == "ReplicaFailure" and c.get("status") == "True":
            return str(c.get("message") or c.get("reason") or "the workload cannot create its pods")
    return None


def all_replicas_ready(workload: Mapping[str, Any]) -> bool:
    """Whether a Deployment or StatefulSet (the object, or its cached summary) runs every replica
    it asks for, ready and on its current template: then its pods have no failure to report that
    matters (``pod_failures``), and the operator does not read them. A leftover failed pod beside
    such a workload (an evicted one, say) is not reported; a pod that fails makes the workload's
    ready count drop, and then the pods are read again."""
    wanted = (workload.get("spec") or {}).get("replicas")
    status = workload.get("status") or {}
    counts = [int(status.get(k) or 0) for k in ("replicas", "readyReplicas", "updatedReplicas")]
    return wanted is not None and counts == [int(wanted)] * 3


#: Degraded reasons that come from the pods (the kopf layer posts a Warning event when one appears).
POD_FAILURE_REASONS = ("EngineCrashLooping", "ImagePullFailing", "Unschedulable", "PodsFailing")
_IMAGE_ERRORS = {"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"}
_START_ERRORS = {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
#: At most this many pods are named in one message (the rest are counted).
_MAX_NAMED = 3


def pod_failures(pods: Sequence[Mapping[str, Any]]) -> tuple[str, str] | None:
    """(reason, message) for pods whose containers cannot run, or None. Pure: ``pods`` are Pod
    objects as the API server returns them."""
    found: list[tuple[int, str]] = []  # (rank of the reason in POD_FAILURE_REASONS, what to say)
    for pod in pods:
        name = (pod.get("metadata") or {}).get("name", "?")
        ps = pod.get("status") or {}
        if ps.get("phase") == "Failed":
            found.append(
                (3, f"pod {name} failed: {ps.get('reason') or ''} {ps.get('message') or ''}".strip())
            )
            continue
        for c in ps.get("conditions") or []:
            unschedulable = ("PodScheduled", "False", "Unschedulable")
            if (c.get("type"), c.get("status"), c.get("reason")) == unschedulable:
                found.append((2, f"pod {name} cannot be scheduled: {c.get('message') or 'no node fits'}"))
        for cs in [*(ps.get("initContainerStatuses") or []), *(ps.get("containerStatuses") or [])]:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            last = (cs.get("lastState") or {}).get("terminated") or {}
            where = f"pod {name} container {cs.get('name', '?')}"
            if reason == "CrashLoopBackOff":
                ended = (
                    f"; last ended {last.get('reason') or 'with an error'} (exit code {last.get('exitCode')})"
                    if last
                    else ""
                )
                found.append((0, f"{where} keeps crashing ({cs.get('restartCount', 0)} restarts{ended})"))
            elif reason in _IMAGE_ERRORS:
                found.append((1, f"{where}: {reason}: {waiting.get('message') or 'cannot pull the image'}"))
            elif reason in _START_ERRORS:
                found.append((3, f"{where}: {reason}: {waiting.get('message') or 'cannot start'}"))
    if not found:
        return None
    found.sort(key=lambda f: f[0])
    reason = POD_FAILURE_REASONS[found[0][0]]
    said = [text for _, text in found[:_MAX_NAMED]]
    if len(found) > _MAX_NAMED:
        said.append(f"and {len(found) - _MAX_NAMED} more")
    return reason, "; ".join(said)


def compute_status(
    *,
    name: str,
    namespace: str,
    generation: int,
    now: datetime,
    previous: Mapping[str, Any] | None,
    errors: Sequence[FieldError] | PlanError | None,
    plan: Plan | None,
    workload: Mapping[str, Any] | None,
    service_port: int,
    engine: EngineStatus | None = None,
    pods: Sequence[Mapping[str, Any]] = (),
    apply_problem: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """The status for one observation (see the module docstring). ``workload`` is the Deployment's
    or StatefulSet's ``status`` (None: not created yet); ``plan`` None when the spec is invalid;
    ``pods`` the engine pods (for crash loops, image pull errors, unschedulable pods);
    ``apply_problem`` (reason, message) when the children could not be applied (a name taken by an
    object this resource does not own, or a child the API server rejects). Built as an
    ``ArcticInferenceServiceStatus`` (the model the CRD's status schema is generated from) and
    dumped with its ``dump()`` (camelCase, absent fields left out)."""
    stamp = kube_time(now)
    old_conditions: Sequence[Mapping[str, Any]] = (previous or {}).get("conditions") or []
    problems = _problems(errors)
    ws = workload or {}
    replicas = int(ws.get("replicas") or 0)
    ready = int(ws.get("readyReplicas") or 0)
    updated = int(ws.get("updatedReplicas") or 0)
    status = ArcticInferenceServiceStatus(
        observed_generation=generation,
        replicas=replicas,
        ready_replicas=ready,
        updated_replicas=updated,
        selector=None if plan is None else selector_string(plan.selector),
        endpoint=f"http://{name}.{namespace}.svc:{service_port}/v1",
        # an engine section with no field set is left out, as an empty one always was
        engine=engine if engine is not None and engine.model_dump(exclude_none=True) else None,
    )

    def cond(type_: ConditionType, value: bool, reason: str, message: str) -> Condition:
        return _condition(type_, value, reason, message, generation, stamp, old_conditions)

    if problems is not None:
        status.conditions = [
            cond("Ready", ready > 0, "InvalidSpec", "the current spec is not served: " + problems),
            cond("Progressing", False, "InvalidSpec", "nothing is rolled out until the spec is fixed"),
            cond("Degraded", True, "InvalidSpec", problems),
        ]
        return status.dump()
    desired = plan.replicas if plan is not None else 0
    stuck = _rollout_stuck(ws)
    failing = pod_failures(pods)
    if apply_problem is not None:
        progressing = (False, apply_problem[0], "nothing is applied until this is resolved")
    elif workload is None:
        progressing = (True, "Creating", "creating the engines' workload")
    elif ready < desired and failing and failing[0] == "Unschedulable":
        # before the rollout and scaling reasons: a pod no node fits stalls them all
        progressing = (True, "Unschedulable", f"{ready} of {desired} replicas ready; {failing[1]}")
    elif updated < min(replicas, desired):
        progressing = (True, "RollingOut", f"{updated} of {desired} replicas run the current spec")
    elif replicas != desired:
        progressing = (True, "Scaling", f"scaling from {replicas} to {desired} replicas")
    elif desired == 0:
        progressing = (False, "ScaledToZero", "scaled to zero replicas")
    elif ready < desired:
        progressing = (
            True,
            "ModelLoading",
            f"{ready} of {desired} replicas ready (engines loading the model)",
        )
    else:
        progressing = (False, "Stable", f"{desired} replicas run the current spec")
    if desired == 0 and workload is not None and apply_problem is None and replicas == 0:
        ready_cond = (True, "ScaledToZero", "0 replicas asked for, 0 running")
    elif desired == 0:
        ready_cond = (False, "ScalingToZero", f"0 replicas asked for, {replicas} still running")
    elif ready >= desired > 0:
        ready_cond = (True, "ReplicasReady", f"{ready} of {desired} replicas ready")
    elif ready == 0:
        ready_cond = (False, "NoReadyReplicas", f"0 of {desired} replicas ready")
    else:
        ready_cond = (False, "NotEnoughReplicas", f"{ready} of {desired} replicas ready")
    refused = _replica_failure(ws)
    if apply_problem is not None:
        degraded = (True, *apply_problem)
    elif refused:
        degraded = (True, "PodsRefused", refused)
    elif failing:
        degraded = (True, *failing)
    elif stuck:
        degraded = (True, "RolloutStuck", stuck)
    else:
        degraded = (False, "AsExpected", "")
    status.conditions = [
        cond("Ready", *ready_cond),
        cond("Progressing", *progressing),
        cond("Degraded", *degraded),
    ]
    return status.dump()


# --------------------------------------------------------------------------------------------
# Patches (JSON merge patch, RFC 7386: objects merge key by key, null removes a key, lists and
# scalars are replaced whole). The status objects come from the models; the only nulls the
# operator ever sends are the ones these functions add to remove a key.
# --------------------------------------------------------------------------------------------


def merge_patch(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch turning ``old`` into ``new`` (a key of ``old`` missing from ``new`` is
    set to null, i.e. removed; lists are replaced whole). Empty when nothing changes."""
    old = old or {}
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            nested = merge_patch(before, value)
            if nested:
                patch[key] = nested
        elif value != before:
            patch[key] = value
    return patch


def reconcile_status_patch(previous: Mapping[str, Any] | None, status: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch for a ``compute_status`` result: only the top-level keys that changed.

    A top-level key ``status`` leaves out is kept, not removed: other writers own some
    (``autoscaling``, ``capController`` and ``pods`` are the control loop's), and with an invalid
    spec nothing is rolled out, so ``selector`` and ``engine`` still describe what runs. Inside a
    key that is an object on both sides (``engine``) the patch removes what is gone, with an
    explicit null: a merge patch merges objects, so without it a soft cap taken out of the spec
    would stay in ``status.engine`` for good: ``merge_patch`` without its top-level removals."""
    return {key: value for key, value in merge_patch(previous, status).items() if key in status}
