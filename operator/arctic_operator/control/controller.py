"""One ``ServiceController`` per ArcticInferenceService: scrape its ready pods, run the policies,
apply the results (replicas on the workload, caps through each pod's admin API), and describe it
all for status. I/O lives here and in ``scrape``/``admin_client``; decisions in ``replicas``/``cap``.

A tick:

1. scrapes every ready pod's /metrics (bounded concurrency, per-request timeout); a pod that does
   not answer, answers garbage or lacks a required series is *not observed* this tick;
2. adds the samples to the per-pod window and summarises each observed pod (``PodWindow``);
3. asks ``decide_replicas`` with the totals over the observed pods (it holds, and never scales
   down, while ``observed < ready``) -- the caller patches the workload when the decision changed;
4. asks ``decide_cap`` per ready pod (an unobserved pod's observation is marked incomplete, so the
   policy holds) and pushes the caps that changed, plus the configured caps a pod has lost (the
   engine reports a different cap, e.g. after a restart);
5. renders the status fields (``autoscaling``, ``capController``, ``pods``) and the events.

The controller keeps everything in memory (windows, policy states, the last N decisions): an
operator restart starts the windows afresh, which only delays decisions by one window.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp

from arctic_operator.api import (
    ArcticInferenceServiceStatus,
    AutoscalingStatus,
    CapChangeRecord,
    CapControllerStatus,
    CostRefinementStatus,
    PodControlStatus,
    RefinementPoint,
    ReplicaDecisionRecord,
)
from arctic_operator.control.admin_client import AdminError, EffectiveCap, put_cap
from arctic_operator.control.cap import CapDecision, CapPolicy, CapState
from arctic_operator.control.loop import ControlLoop
from arctic_operator.control.loop import cap_observation as cap_observation
from arctic_operator.control.loop import replica_observation as replica_observation
from arctic_operator.control.metrics import MetricsWindow, PodSample, PodWindow
from arctic_operator.control.refine import Refinement
from arctic_operator.control.replicas import ReplicaDecision, ReplicaObservation, ReplicaPolicy, ReplicaState
from arctic_operator.control.scrape import scrape
from arctic_operator.plan import ADMIN_PORT_NAME, ENGINE_CONTAINER, ENGINE_PORT_NAME
from arctic_operator.status import kube_time

#: Event = (type, reason, message), as kopf.event takes them.
Event = tuple[str, str, str]


@dataclass(frozen=True)
class PodTarget:
    """A pod the controller looks at."""

    name: str
    ready: bool
    metrics_url: str | None
    """http://IP:PORT/metrics; None while the pod has no IP."""
    admin_url: str | None
    """http://IP:ADMIN_PORT: the runtime's admin API (under /arctic/v1) on its own port, the engine
    container's port named "admin"; None while the pod has no IP."""


@dataclass
class TickResult:
    """What one tick decided and did, for status, events and logs."""

    replicas: ReplicaDecision | None = None
    """ReplicaDecision, or None when autoscaling is off."""
    caps: dict[str, CapDecision] = field(default_factory=dict)
    """pod -> CapDecision (cap controller on)."""
    pushed: dict[str, str] = field(default_factory=dict)
    """pod -> "ok" or the error of pushing its cap."""
    scrape_errors: dict[str, str] = field(default_factory=dict)
    """pod -> why its metrics could not be read this tick."""
    status: dict[str, Any] = field(default_factory=dict)
    """The status fields the control loop owns (``CONTROL_STATUS_FIELDS``), camelCase, dumped from
    an ``ArcticInferenceServiceStatus`` (see ``control_status``)."""
    events: list[Event] = field(default_factory=list)
    """Events to post on the resource: scale and cap changes, new scrape or push failures."""


@dataclass(frozen=True)
class ControllerConfig:
    """Intervals and limits of one controller (the policies have their own settings)."""

    window_s: float = 30.0
    """Seconds of samples per pod that the policies see (means, acceptance)."""
    max_age_s: float = 20.0
    """A pod whose newest complete sample is older than this is not observed."""
    scrape_timeout_s: float = 2.0
    """Seconds one /metrics request may take."""
    admin_timeout_s: float = 5.0
    """Seconds one cap change through the admin API may take."""
    concurrency: int = 16
    """Most requests (scrapes, cap changes) in flight at once."""
    history: int = 10
    """Replica decisions and cap changes kept for status."""
    reapply_grace_s: float = 10.0
    """After a successful cap change, seconds during which a different cap in the pod's metrics is
    taken as not yet refreshed (the runtime mirrors the engine's cap into /metrics every second)
    rather than lost."""

    def __post_init__(self) -> None:
        for name in ("window_s", "max_age_s", "scrape_timeout_s", "admin_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be positive, got {getattr(self, name)}")
        if self.concurrency < 1 or self.history < 1:
            raise ValueError("concurrency and history: must be at least 1")


# --------------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------------


def _pod_ready(pod: Mapping[str, Any]) -> bool:
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    status = pod.get("status") or {}
    if status.get("phase") not in (None, "Running"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def _named_port(pod: Mapping[str, Any], name: str) -> int | None:
    """The engine container's port called ``name`` (another container's only if the engine has none)."""
    containers = (pod.get("spec") or {}).get("containers") or []
    ordered = sorted(containers, key=lambda c: c.get("name") != ENGINE_CONTAINER)  # the engine first
    for container in ordered:
        for port in container.get("ports") or []:
            if port.get("name") == name and port.get("containerPort"):
                return int(port["containerPort"])
    return None


def pod_target(pod: Mapping[str, Any], default_port: int) -> PodTarget:
    """A Pod object (as the API returns it) -> PodTarget: URLs from status.podIP, /metrics on the
    container port named "http" (else ``default_port``, spec.service.port) and the admin API on the
    port named "admin". A pod that declares no admin port was made by an operator release whose
    runtime served the admin API on the serving port: it is called there."""
    name = str((pod.get("metadata") or {}).get("name"))
    ip = (pod.get("status") or {}).get("podIP")
    if not ip:
        return PodTarget(name=name, ready=_pod_ready(pod), metrics_url=None, admin_url=None)
    host = f"[{ip}]" if ":" in str(ip) else str(ip)
    serving = _named_port(pod, ENGINE_PORT_NAME) or default_port
    admin = _named_port(pod, ADMIN_PORT_NAME) or serving
    return PodTarget(
        name=name,
        ready=_pod_ready(pod),
        metrics_url=f"http://{host}:{serving}/metrics",
        admin_url=f"http://{host}:{admin}",
    )


def pod_targets(pods: Iterable[Mapping[str, Any]], default_port: int) -> tuple[list[PodTarget], int]:
    """Every live pod as a PodTarget (sorted by name), and how many are loading (exist, are not
    being deleted, and are not ready yet). Terminating and finished pods are left out."""
    targets: list[PodTarget] = []
    loading = 0
    for pod in pods:
        meta = pod.get("metadata") or {}
        phase = (pod.get("status") or {}).get("phase")
        if meta.get("deletionTimestamp") or phase in ("Succeeded", "Failed"):
            continue
        target = pod_target(pod, default_port)
        targets.append(target)
        loading += not target.ready
    targets.sort(key=lambda t: t.name)
    return targets, loading


def unix_time(t: float) -> dt.datetime:
    """Unix seconds -> a UTC time in whole seconds, as Kubernetes keeps them (the models dump it
    as ``rfc3339`` writes it)."""
    return kube_time(dt.datetime.fromtimestamp(t, dt.UTC))


def rfc3339(t: float) -> str:
    """Unix seconds -> an RFC 3339 UTC timestamp, as Kubernetes writes them."""
    return unix_time(t).strftime("%Y-%m-%dT%H:%M:%SZ")


def _num(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(float(value), digits)


def decision_record(decision: ReplicaDecision) -> ReplicaDecisionRecord:
    """One entry of status.autoscaling.lastDecisions."""
    return ReplicaDecisionRecord(
        time=unix_time(decision.time),
        current=decision.current,
        desired=decision.desired,
        reason=decision.reason,
        message=decision.message[:1024],
    )


def autoscaling_status(
    decision: ReplicaDecision,
    obs: ReplicaObservation,
    history: Sequence[ReplicaDecision],
    last_scale_time: float | None,
) -> AutoscalingStatus:
    """status.autoscaling for the latest decision and the observation it was made from."""
    return AutoscalingStatus(
        desired_replicas=decision.desired,
        current_replicas=decision.current,
        reason=decision.reason,
        message=decision.message[:1024],
        metrics_complete=obs.observed >= obs.ready,
        ready_pods=obs.ready,
        observed_pods=obs.observed,
        loading_pods=obs.loading,
        waiting_requests=_num(obs.waiting_total),
        running_requests=_num(obs.running_total),
        kv_cache_usage=_num(obs.kv_cache_usage_mean),
        last_scale_time=None if last_scale_time is None else unix_time(last_scale_time),
        last_decisions=[decision_record(d) for d in history],
    )


@dataclass(frozen=True)
class CapChange:
    """A cap change the controller made, for status.capController.lastChanges."""

    pod: str
    decision: CapDecision
    result: str
    """"Ok", or the error of pushing it."""


def refinement_status(refinement: Refinement | None) -> CostRefinementStatus | None:
    """status.capController.costRefinement; None while nothing is refined."""
    if refinement is None or not refinement.refined:
        return None
    return CostRefinementStatus(
        steps=round(refinement.steps),
        verify_cost=[
            RefinementPoint(batch=round(b, 2), change=round(c, 3)) for b, c in refinement.points[:16]
        ],
    )


def cap_change_record(change: CapChange) -> CapChangeRecord:
    """One entry of status.capController.lastChanges."""
    d = change.decision
    return CapChangeRecord(
        time=unix_time(d.time),
        pod=change.pod,
        soft_cap=d.soft_cap,
        hard_cap=d.hard_cap,
        previous_soft_cap=d.previous_soft_cap,
        previous_hard_cap=d.previous_hard_cap,
        reason=d.reason,
        message=d.message[:1024],
        result=change.result[:1024],
    )


def pod_status(
    target: PodTarget,
    *,
    error: str | None,
    incomplete: bool,
    window: PodWindow | None,
    cap_state: CapState | None,
    cap_decision: CapDecision | None,
    effective: EffectiveCap | None,
    cap_error: str | None,
) -> PodControlStatus:
    """One entry of status.pods."""
    metrics: Literal["Ok", "Error", "Incomplete", "NotReady"]
    if not target.ready:
        metrics = "NotReady"
    elif incomplete:
        metrics = "Incomplete"
    elif error is not None:
        metrics = "Error"
    else:
        metrics = "Ok"
    return PodControlStatus(
        name=target.name,
        ready=target.ready,
        metrics=metrics,
        metrics_error=None if error is None else error[:1024],
        running=None if window is None else _num(window.running),
        waiting=None if window is None else _num(window.waiting),
        kv_cache_usage=None if window is None else _num(window.kv_cache_usage),
        acceptance_rate=None if window is None else _num(window.acceptance_rate),
        configured_soft_cap=None if cap_state is None else cap_state.soft_cap,
        configured_hard_cap=None if cap_state is None or cap_state.soft_cap is None else cap_state.hard_cap,
        effective_soft_cap=None if effective is None else effective.soft_cap,
        effective_hard_cap=None if effective is None else effective.hard_cap,
        cap_reason=None if cap_decision is None else cap_decision.reason,
        cap_message=None if cap_decision is None else cap_decision.message[:1024],
        cap_error=None if cap_error is None else cap_error[:1024],
    )


#: The status fields the control loop owns (reconcile writes the others), as JSON names.
CONTROL_STATUS_FIELDS = ("autoscaling", "capController", "pods")


def control_status(
    autoscaling: AutoscalingStatus | None,
    cap_controller: CapControllerStatus | None,
    pods: Sequence[PodControlStatus],
) -> dict[str, Any]:
    """The control loop's status fields (absent: that half of the loop is off), dumped from an
    ``ArcticInferenceServiceStatus`` so that their names and shapes are the CRD's."""
    status = ArcticInferenceServiceStatus(
        autoscaling=autoscaling, cap_controller=cap_controller, pods=list(pods)
    )
    dumped = status.dump()
    return {key: dumped[key] for key in CONTROL_STATUS_FIELDS if key in dumped}


def _caps(soft: int | None, hard: int | None) -> str:
    return f"soft cap {'none' if soft is None else soft}, hard cap {'none' if hard is None else hard}"


# --------------------------------------------------------------------------------------------
# The controller
# --------------------------------------------------------------------------------------------


class ServiceController:
    """The control loop's memory for one ArcticInferenceService (see the module docstring).

    ``replica_policy``, ``cap_policy`` and ``admin_token`` are plain attributes: the caller sets
    them from the live spec and Secret before each tick (a changed policy keeps the windows and
    states). None turns that half of the loop off.
    """

    def __init__(
        self,
        replica_policy: ReplicaPolicy | None = None,
        cap_policy: CapPolicy | None = None,
        *,
        admin_token: str | None = None,
        config: ControllerConfig | None = None,
        session_factory: Callable[[], aiohttp.ClientSession] = aiohttp.ClientSession,
    ) -> None:
        self.admin_token = admin_token
        self.config = config or ControllerConfig()
        self.session_factory = session_factory
        self.loop = ControlLoop(
            replica_policy, cap_policy, window_s=self.config.window_s, max_age_s=self.config.max_age_s
        )
        """The decisions (shared with the simulator, bench/control.py)."""
        self.decisions: deque[ReplicaDecision] = deque(maxlen=self.config.history)
        self.cap_changes: deque[CapChange] = deque(maxlen=self.config.history)
        self.last_scale_time: float | None = None
        self._effective: dict[str, EffectiveCap] = {}
        self._pushed_at: dict[str, float] = {}
        self._cap_errors: dict[str, str] = {}
        self._cap_decisions: dict[str, CapDecision] = {}
        self._scrape_failing: set[str] = set()
        self.status_written: float | None = None
        """When the caller last patched the status from a tick (its clock)."""

    @property
    def replica_policy(self) -> ReplicaPolicy | None:
        return self.loop.replica_policy

    @replica_policy.setter
    def replica_policy(self, policy: ReplicaPolicy | None) -> None:
        self.loop.replica_policy = policy

    @property
    def cap_policy(self) -> CapPolicy | None:
        return self.loop.cap_policy

    @cap_policy.setter
    def cap_policy(self, policy: CapPolicy | None) -> None:
        self.loop.cap_policy = policy

    @property
    def window(self) -> MetricsWindow:
        return self.loop.window

    @property
    def replica_state(self) -> ReplicaState:
        return self.loop.replica_state

    @property
    def cap_states(self) -> dict[str, CapState]:
        return self.loop.cap_states

    # ---- one tick -----------------------------------------------------------------------

    async def tick(
        self, pods: Sequence[PodTarget], current_replicas: int, loading: int, now: float
    ) -> TickResult:
        """Scrape, decide, push caps; the workload's replicas are the caller's to patch
        (``result.replicas.changed``)."""
        result = TickResult()
        names = [p.name for p in pods]
        ready = [p for p in pods if p.ready]
        targets = {p.name: p.metrics_url for p in ready if p.metrics_url}
        for p in ready:
            if not p.metrics_url:
                result.scrape_errors[p.name] = "the pod has no IP address yet"
        async with self.session_factory() as session:
            scraped = await scrape(
                session,
                targets,
                now,
                timeout_s=self.config.scrape_timeout_s,
                concurrency=self.config.concurrency,
            )
            samples, incomplete = self._record(scraped, result)
            self.loop.forget(names)
            self._forget(names)
            decided = self.loop.decide(now, current_replicas, [p.name for p in ready], loading, samples)
            windows = decided.windows
            autoscaling: AutoscalingStatus | None = None
            if decided.replicas is not None and decided.replica_observation is not None:
                decision = decided.replicas
                result.replicas = decision
                self._remember(decision, result)
                autoscaling = autoscaling_status(
                    decision, decided.replica_observation, list(self.decisions), self.last_scale_time
                )
            cap_controller: CapControllerStatus | None = None
            if self.cap_policy is not None:
                await self._caps(session, ready, windows, decided.caps, samples, now, result)
                cap_controller = CapControllerStatus(
                    last_changes=[cap_change_record(c) for c in self.cap_changes],
                    cost_refinement=refinement_status(decided.refinement),
                )
        self._scrape_events(ready, result)
        pods_status = [
            pod_status(
                p,
                error=result.scrape_errors.get(p.name),
                incomplete=p.name in incomplete,
                window=windows.get(p.name),
                cap_state=self.cap_states.get(p.name) if self.cap_policy is not None else None,
                cap_decision=self._cap_decisions.get(p.name) if self.cap_policy is not None else None,
                effective=self._effective.get(p.name),
                cap_error=self._cap_errors.get(p.name) if self.cap_policy is not None else None,
            )
            for p in pods
        ]
        result.status = control_status(autoscaling, cap_controller, pods_status)
        return result

    def _record(
        self, scraped: Mapping[str, PodSample | str], result: TickResult
    ) -> tuple[dict[str, PodSample], set[str]]:
        """Add samples to the window; (complete samples by pod, pods with incomplete samples)."""
        samples: dict[str, PodSample] = {}
        incomplete: set[str] = set()
        for pod, got in scraped.items():
            if isinstance(got, str):
                result.scrape_errors[pod] = got
                continue
            self.window.add(pod, got)
            if got.cap_reported:
                self._effective[pod] = EffectiveCap(got.soft_cap, got.hard_cap)
            if not got.complete:
                incomplete.add(pod)
                result.scrape_errors[pod] = "metrics incomplete: no " + ", ".join(got.missing)
                continue
            samples[pod] = got
        return samples, incomplete

    def _forget(self, keep: Sequence[str]) -> None:
        live = set(keep)
        for memory in (
            self._effective,
            self._pushed_at,
            self._cap_errors,
            self._cap_decisions,
        ):
            for pod in [p for p in memory if p not in live]:
                del memory[pod]
        self._scrape_failing &= live

    def _remember(self, decision: ReplicaDecision, result: TickResult) -> None:
        """Keep the decision for status if it changed the count or the reason; events for changes."""
        last = self.decisions[-1] if self.decisions else None
        if decision.changed or last is None or last.reason != decision.reason:
            self.decisions.append(decision)
        if decision.changed:
            self.last_scale_time = decision.time
            reason = "ScaledUp" if decision.desired > decision.current else "ScaledDown"
            result.events.append(
                (
                    "Normal",
                    reason,
                    f"replicas {decision.current} -> {decision.desired} ({decision.reason}): "
                    f"{decision.message}",
                )
            )

    def _scrape_events(self, ready: Sequence[PodTarget], result: TickResult) -> None:
        """A Warning when a pod's metrics start failing (not on every tick while they fail)."""
        for p in ready:
            error = result.scrape_errors.get(p.name)
            if error is None:
                self._scrape_failing.discard(p.name)
            elif p.name not in self._scrape_failing:
                self._scrape_failing.add(p.name)
                result.events.append(
                    (
                        "Warning",
                        "MetricsUnavailable",
                        f"pod {p.name}: {error}; the autoscaler and cap controller hold for it",
                    )
                )

    # ---- caps ---------------------------------------------------------------------------

    async def _caps(
        self,
        session: aiohttp.ClientSession,
        ready: Sequence[PodTarget],
        windows: Mapping[str, PodWindow],
        decisions: Mapping[str, CapDecision],
        samples: Mapping[str, PodSample],
        now: float,
        result: TickResult,
    ) -> None:
        pushes: dict[str, tuple[str, PodTarget, CapDecision]] = {}  # pod -> (why, target, decision)
        for target in ready:
            pod = target.name
            window = windows.get(pod)
            decision, state = decisions[pod], self.cap_states[pod]
            self._cap_decisions[pod] = decision
            result.caps[pod] = decision
            if window is None or target.admin_url is None or state.soft_cap is None:
                continue  # never act on a pod that was not observed; nothing configured yet
            configured = EffectiveCap(state.soft_cap, state.hard_cap)
            if decision.changed:
                pushes[pod] = ("changed", target, decision)
            elif self._lost(pod, configured, samples.get(pod), now):
                pushes[pod] = ("reapply", target, decision)
        if not pushes:
            return
        if self.admin_token is None:
            for pod, (why, _, decision) in pushes.items():
                self._pushed(pod, why, decision, "the admin token Secret could not be read", now, result)
            return
        gate = asyncio.Semaphore(self.config.concurrency)
        token = self.admin_token

        async def push(target: PodTarget) -> EffectiveCap | str:
            state = self.cap_states[target.name]
            async with gate:
                try:
                    assert target.admin_url is not None
                    return await put_cap(
                        session,
                        target.admin_url,
                        token,
                        state.soft_cap,
                        state.hard_cap,
                        timeout_s=self.config.admin_timeout_s,
                    )
                except AdminError as exc:
                    return str(exc)

        pods = list(pushes)
        answers = await asyncio.gather(*(push(pushes[p][1]) for p in pods))
        for pod, answer in zip(pods, answers, strict=True):
            why, _, decision = pushes[pod]
            self._pushed(pod, why, decision, answer, now, result)

    def _lost(self, pod: str, configured: EffectiveCap, sample: PodSample | None, now: float) -> bool:
        """Whether the engine no longer has the cap the controller configured (pod restart)."""
        pushed_at = self._pushed_at.get(pod)
        if pushed_at is not None and now - pushed_at < self.config.reapply_grace_s:
            return False
        if sample is not None and sample.cap_reported:
            return EffectiveCap(sample.soft_cap, sample.hard_cap) != configured
        return self._effective.get(pod) != configured  # not reported: trust the last answer

    def _pushed(
        self,
        pod: str,
        why: str,
        decision: CapDecision,
        answer: EffectiveCap | str,
        now: float,
        result: TickResult,
    ) -> None:
        state = self.cap_states[pod]
        if isinstance(answer, EffectiveCap):
            result.pushed[pod] = "ok"
            self._effective[pod] = answer
            self._pushed_at[pod] = now
            self._cap_errors.pop(pod, None)
        else:
            result.pushed[pod] = answer
            if self._cap_errors.get(pod) != answer:
                result.events.append(("Warning", "CapUpdateFailed", f"pod {pod}: {answer}"))
            self._cap_errors[pod] = answer
        if why == "changed":
            self.cap_changes.append(
                CapChange(pod, decision, "Ok" if isinstance(answer, EffectiveCap) else answer)
            )
            if isinstance(answer, EffectiveCap):
                result.events.append(
                    (
                        "Normal",
                        "CapChanged",
                        f"pod {pod}: {_caps(decision.previous_soft_cap, decision.previous_hard_cap)} -> "
                        f"{_caps(decision.soft_cap, decision.hard_cap)} ({decision.reason}): "
                        f"{decision.message}",
                    )
                )
        elif isinstance(answer, EffectiveCap):
            result.events.append(
                (
                    "Normal",
                    "CapReapplied",
                    f"pod {pod}: the engine had lost the configured cap (after a restart?); set "
                    f"{_caps(state.soft_cap, state.hard_cap)} again",
                )
            )
