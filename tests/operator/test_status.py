"""Status from observations (pure): conditions users and Argo CD read, counts the scale subresource reads."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from arctic_operator.api import EngineStatus
from arctic_operator.plan import Plan, PlanError, labels
from arctic_operator.status import compute_status as compute_status_of
from arctic_operator.validation import FieldError
from tests.operator.status_checks import assert_typed_status

T0 = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
T1 = datetime(2026, 11, 25, 12, 5, 0, tzinfo=UTC)


def compute_status(**kwargs: Any) -> dict[str, Any]:
    """The status under test, checked against the typed model and the CRD (every example here)."""
    return assert_typed_status(compute_status_of(**kwargs))


def status(
    workload: dict[str, Any] | None,
    *,
    replicas: int = 2,
    errors: Any = None,
    previous: dict[str, Any] | None = None,
    now: datetime = T0,
) -> dict[str, Any]:
    plan = None if errors else Plan(replicas=replicas, selector=labels("llama"))
    return compute_status(
        name="llama",
        namespace="ml",
        generation=3,
        now=now,
        previous=previous,
        errors=errors,
        plan=plan,
        workload=workload,
        service_port=8000,
        engine=EngineStatus(speculation_method="suffix", soft_cap=32),
    )


def conditions(s: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in s["conditions"]}


def test_all_replicas_ready_is_ready_and_stable() -> None:
    s = status({"replicas": 2, "readyReplicas": 2, "updatedReplicas": 2})
    assert conditions(s) == {
        "Ready": ("True", "ReplicasReady"),
        "Progressing": ("False", "Stable"),
        "Degraded": ("False", "AsExpected"),
    }
    assert s["observedGeneration"] == 3 and (s["replicas"], s["readyReplicas"], s["updatedReplicas"]) == (
        2,
        2,
        2,
    )
    assert s["endpoint"] == "http://llama.ml.svc:8000/v1" and s["engine"]["softCap"] == 32
    assert s["selector"] == (
        "app.kubernetes.io/component=engine,app.kubernetes.io/instance=llama,"
        "app.kubernetes.io/managed-by=arctic-serve-operator,app.kubernetes.io/name=arctic-serve"
    )


def test_lifecycle_reasons() -> None:
    assert conditions(status(None))["Progressing"] == ("True", "Creating")
    loading = status({"replicas": 2, "readyReplicas": 1, "updatedReplicas": 2})
    assert conditions(loading)["Progressing"] == ("True", "ModelLoading")
    assert conditions(loading)["Ready"] == ("False", "NotEnoughReplicas")
    rolling = status({"replicas": 2, "readyReplicas": 2, "updatedReplicas": 1})
    assert conditions(rolling)["Progressing"] == ("True", "RollingOut")
    scaling = status({"replicas": 2, "readyReplicas": 2, "updatedReplicas": 2}, replicas=4)
    assert conditions(scaling)["Progressing"] == ("True", "Scaling")
    assert conditions(scaling)["Ready"] == ("False", "NotEnoughReplicas")


def test_invalid_spec_is_degraded_naming_every_field() -> None:
    errors = [
        FieldError("spec.speculation.hardCap", "must be >= spec.speculation.softCap", "got 2 < 4"),
        FieldError(
            "spec.parallelism.tensor", "tensor x ulysses must equal gpusPerPod", "got 2 x 1 = 2, gpusPerPod 4"
        ),
    ]
    s = status({"replicas": 2, "readyReplicas": 2, "updatedReplicas": 2}, errors=errors)
    degraded = next(c for c in s["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "InvalidSpec"
    assert degraded["message"] == (
        "spec.speculation.hardCap: must be >= spec.speculation.softCap (got 2 < 4); "
        "spec.parallelism.tensor: tensor x ulysses must equal gpusPerPod (got 2 x 1 = 2, gpusPerPod 4)"
    )
    assert "selector" not in s
    unsupported = status(None, errors=PlanError("spec.swiftKV.enabled", "not in this runtime release yet"))
    assert conditions(unsupported)["Degraded"] == ("True", "InvalidSpec")


def test_stuck_rollout_is_degraded() -> None:
    workload = {
        "replicas": 2,
        "readyReplicas": 1,
        "updatedReplicas": 1,
        "conditions": [
            {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": 'ReplicaSet "llama-5d9" has timed out progressing.',
            }
        ],
    }
    degraded = next(c for c in status(workload)["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "RolloutStuck")
    assert "timed out" in degraded["message"]


def test_transition_time_moves_only_when_the_status_flips() -> None:
    first = status({"replicas": 2, "readyReplicas": 1, "updatedReplicas": 2}, now=T0)
    same = status({"replicas": 2, "readyReplicas": 1, "updatedReplicas": 2}, previous=first, now=T1)
    flipped = status({"replicas": 2, "readyReplicas": 2, "updatedReplicas": 2}, previous=first, now=T1)

    def since(s: dict[str, Any], type_: str) -> str:
        return str(next(c for c in s["conditions"] if c["type"] == type_)["lastTransitionTime"])

    assert since(same, "Ready") == "2026-11-25T12:00:00Z"
    assert since(flipped, "Ready") == "2026-11-25T12:05:00Z"  # False -> True
    assert since(flipped, "Degraded") == "2026-11-25T12:00:00Z"  # still False


def pod(name: str, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": status}


CRASHING = pod(
    "llama-7c9-abcde",
    phase="Running",
    containerStatuses=[
        {
            "name": "engine",
            "restartCount": 4,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 1m20s"}},
            "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}},
        }
    ],
)
HEALTHY = pod(
    "llama-7c9-fghij",
    phase="Running",
    containerStatuses=[{"name": "engine", "restartCount": 0, "state": {"running": {}}}],
)


def with_pods(pods: list[dict[str, Any]], workload: dict[str, Any] | None = None) -> dict[str, Any]:
    plan = Plan(replicas=2, selector=labels("llama"))
    return compute_status(
        name="llama",
        namespace="ml",
        generation=3,
        now=T0,
        previous=None,
        errors=None,
        plan=plan,
        workload=workload or {"replicas": 2, "readyReplicas": 1, "updatedReplicas": 2},
        service_port=8000,
        pods=pods,
    )


def test_a_crash_looping_engine_is_degraded_with_pod_restarts_and_how_it_ended() -> None:
    s = with_pods([HEALTHY, CRASHING])
    degraded = next(c for c in s["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "EngineCrashLooping")
    assert "llama-7c9-abcde" in degraded["message"] and "engine" in degraded["message"]
    assert "4 restarts" in degraded["message"] and "OOMKilled" in degraded["message"]
    assert "137" in degraded["message"]
    # still reported as loading/not ready beside it
    assert conditions(s)["Ready"] == ("False", "NotEnoughReplicas")


def test_image_pull_errors_and_start_errors_have_their_own_reasons() -> None:
    pulling = pod(
        "p1",
        containerStatuses=[
            {"name": "engine", "state": {"waiting": {"reason": "ImagePullBackOff", "message": "no such tag"}}}
        ],
    )
    config = pod(
        "p2",
        containerStatuses=[
            {
                "name": "engine",
                "state": {
                    "waiting": {"reason": "CreateContainerConfigError", "message": 'secret "x" not found'}
                },
            }
        ],
    )
    assert conditions(with_pods([pulling]))["Degraded"] == ("True", "ImagePullFailing")
    s = with_pods([config])
    assert conditions(s)["Degraded"] == ("True", "PodsFailing")
    assert 'secret "x" not found' in next(c for c in s["conditions"] if c["type"] == "Degraded")["message"]
    # a crash loop outranks the others when several pods fail
    assert conditions(with_pods([config, pulling, CRASHING]))["Degraded"] == ("True", "EngineCrashLooping")


def test_healthy_or_starting_pods_are_not_degraded() -> None:
    starting = pod(
        "p3", containerStatuses=[{"name": "engine", "state": {"waiting": {"reason": "ContainerCreating"}}}]
    )
    assert conditions(with_pods([HEALTHY, starting]))["Degraded"] == ("False", "AsExpected")


def test_many_failing_pods_are_counted_not_all_named() -> None:
    crashing = [{**CRASHING, "metadata": {"name": f"llama-{i}"}} for i in range(6)]
    message = next(c for c in with_pods(crashing)["conditions"] if c["type"] == "Degraded")["message"]
    assert "llama-0" in message and "llama-5" not in message and "and 3 more" in message


def test_zero_replicas_asked_for_is_ready_scaled_to_zero() -> None:
    # so Argo CD shows Healthy, not Progressing forever
    s = status({"replicas": 0}, replicas=0)
    assert conditions(s)["Ready"] == ("True", "ScaledToZero")
    assert conditions(s)["Progressing"] == ("False", "ScaledToZero")
    still = conditions(status({"replicas": 1}, replicas=0))
    assert still["Progressing"] == ("True", "Scaling") and still["Ready"] == ("False", "ScalingToZero")


def test_a_pod_no_node_fits_is_unschedulable_with_the_schedulers_message() -> None:
    why = "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."
    pod = {
        "metadata": {"name": "llama-0"},
        "status": {
            "phase": "Pending",
            "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": why}
            ],
        },
    }
    s = compute_status(
        name="llama",
        namespace="ml",
        generation=1,
        now=T0,
        previous=None,
        errors=None,
        plan=Plan(replicas=1, selector=labels("llama")),
        workload={"replicas": 1, "updatedReplicas": 1},
        service_port=8000,
        pods=[pod],
    )
    assert conditions(s)["Progressing"] == ("True", "Unschedulable")
    degraded = next(c for c in s["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "Unschedulable") and why in degraded[
        "message"
    ]


def test_children_that_could_not_be_applied_are_degraded_with_the_reason() -> None:
    s = compute_status(
        name="llama",
        namespace="ml",
        generation=1,
        now=T0,
        previous=None,
        errors=None,
        plan=Plan(replicas=1, selector=labels("llama")),
        workload=None,
        service_port=8000,
        apply_problem=(
            "NameConflict",
            "Service/llama exists and is not owned by this ArcticInferenceService",
        ),
    )
    assert conditions(s) == {
        "Ready": ("False", "NoReadyReplicas"),
        "Progressing": ("False", "NameConflict"),
        "Degraded": ("True", "NameConflict"),
    }


def test_a_workload_that_cannot_create_pods_is_degraded_with_its_message() -> None:
    refused = {
        "replicas": 0,
        "conditions": [
            {
                "type": "ReplicaFailure",
                "status": "True",
                "reason": "FailedCreate",
                "message": 'pods "llama-x" is forbidden: violates PodSecurity "restricted:latest"',
            },
        ],
    }
    degraded = next(c for c in status(refused)["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "PodsRefused" and "PodSecurity" in degraded["message"]
