"""The control loop's decisions for one service, without I/O: samples in, decisions out. Pure.

``ControlLoop`` keeps the per-pod metrics window and the policies' states; each ``decide`` turns the
pods' windows into the observations the replica and cap policies take and returns their decisions.
The operator's ``ServiceController`` wraps it with scraping, the admin API and status; the
simulator (``bench/control.py``) feeds it simulated scrapes. One implementation for both, so what
the simulator measures is what the operator runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from arctic_operator.control.cap import (
    CapDecision,
    CapObservation,
    CapPolicy,
    CapState,
    decide_cap,
    undrafted_batch,
)
from arctic_operator.control.cost import VerifyCosts
from arctic_operator.control.metrics import MetricsWindow, PodSample, PodWindow
from arctic_operator.control.refine import Refinement, StepTimes, refine_costs
from arctic_operator.control.replicas import (
    ReplicaDecision,
    ReplicaObservation,
    ReplicaPolicy,
    ReplicaState,
    decide_replicas,
)


def undrafted_running(window: PodWindow, costs: VerifyCosts) -> float:
    """The pod's running requests as they would be without drafting, for the same load: at least
    its running requests. Of its request-steps a share d / n drafted (d drafts, n request-steps over
    the window), each gaining a accepted tokens, in steps 1 + (d / n) x (c - 1) times as long as a
    plain one (c: the verify cost at the pod's batch and mean draft length, at least 1: a verify
    step is never shorter than a plain one). Without drafting each running request makes one token a
    step, so the same tokens per second take ``cap.undrafted_batch`` running requests: b x (1 + (d /
    n) x a) / (1 + (d / n) x (c - 1)), at the same step time (a lower bound: the larger batch's step
    is longer). Without drafts, accepted tokens or request-steps in the window: the running requests
    as counted."""
    batch = window.running
    if batch <= 0 or window.accepted_per_draft is None or window.request_steps is None or window.drafts <= 0:
        return batch
    share = min(1.0, window.drafts / window.request_steps)
    draft_len = None
    if window.acceptance_rate:
        draft_len = window.accepted_per_draft / window.acceptance_rate
    extra = max(0.0, costs.model_for(draft_len).cost(max(1.0, batch)) - 1)
    return max(batch, undrafted_batch(batch, share * batch, window.accepted_per_draft, extra))


def replica_observation(
    now: float,
    current: int,
    ready: int,
    loading: int,
    windows: Sequence[PodWindow],
    waiting_growth: float | None = None,
    costs: VerifyCosts | None = None,
) -> ReplicaObservation:
    """The autoscaler's input: totals over the observed pods' windows; with ``costs``, also their
    running requests as they would be without drafting (``undrafted_running``)."""
    kv = [w.kv_cache_usage for w in windows if w.kv_cache_usage is not None]
    return ReplicaObservation(
        time=now,
        current=current,
        ready=ready,
        loading=loading,
        observed=len(windows),
        waiting_total=sum(w.waiting for w in windows),
        running_total=sum(w.running for w in windows),
        kv_cache_usage_mean=sum(kv) / len(kv) if kv else None,
        waiting_growth=waiting_growth,
        running_undrafted_total=None if costs is None else sum(undrafted_running(w, costs) for w in windows),
    )


def cap_observation(now: float, window: PodWindow | None) -> CapObservation:
    """The cap policy's input for one pod; without a window the observation is incomplete."""
    if window is None:
        return CapObservation(
            time=now,
            running=0.0,
            waiting=0.0,
            accepted_per_draft=None,
            effective_soft_cap=None,
            effective_hard_cap=None,
            complete=False,
        )
    draft_len = None
    if window.accepted_per_draft is not None and window.acceptance_rate:
        # accepted / drafts over accepted / draft tokens = draft tokens per draft
        draft_len = window.accepted_per_draft / window.acceptance_rate
    return CapObservation(
        time=now,
        running=window.running,
        waiting=window.waiting,
        accepted_per_draft=window.accepted_per_draft,
        effective_soft_cap=window.soft_cap,
        effective_hard_cap=window.hard_cap,
        complete=True,
        draft_len=draft_len,
        prompt_tokens=window.prompt_tokens_per_request,
        drafts=window.drafts,
    )


def waiting_growth(history: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope (requests per second) of the service's total waiting requests over
    ``history`` ((time, total) pairs); None with fewer than two distinct times."""
    if not history:
        return None
    mean_t = sum(t for t, _ in history) / len(history)
    spread = sum((t - mean_t) ** 2 for t, _ in history)
    if spread <= 0:  # one distinct time
        return None
    # sum((t - mean_t) x (w - mean_w)) = sum((t - mean_t) x w): the deviations of t sum to zero
    return sum((t - mean_t) * w for t, w in history) / spread


@dataclass
class LoopDecisions:
    """What one ``decide`` saw and decided."""

    windows: dict[str, PodWindow] = field(default_factory=dict)
    """Observed pods' windows."""
    replica_observation: ReplicaObservation | None = None
    replicas: ReplicaDecision | None = None
    """None when autoscaling is off."""
    caps: dict[str, CapDecision] = field(default_factory=dict)
    """Ready pod -> its cap decision (cap controller on)."""
    refinement: Refinement | None = None
    """The cost file as refined from the pods' decode steps, when the cap policy asks for it."""


class ControlLoop:
    """Windows and policy states of one service; ``replica_policy``/``cap_policy`` may change
    between ticks (None turns that half off)."""

    def __init__(
        self,
        replica_policy: ReplicaPolicy | None = None,
        cap_policy: CapPolicy | None = None,
        *,
        window_s: float = 30.0,
        max_age_s: float = 20.0,
    ) -> None:
        self.replica_policy = replica_policy
        self.cap_policy = cap_policy
        self.max_age_s = max_age_s
        self.window = MetricsWindow(window_s)
        self.replica_state = ReplicaState()
        self.cap_states: dict[str, CapState] = {}
        self.waiting_history: list[tuple[float, float]] = []
        """(time, total waiting over observed pods) of the last window: the queue's growth rate."""
        self.step_times = StepTimes()
        """The pods' decode steps, for ``refine_costs`` (the cap policy's ``refine_costs``)."""

    def observe(self, pod: str, sample: PodSample) -> None:
        self.window.add(pod, sample)
        if sample.decode_steps is not None:
            self.step_times.add(pod, sample.time, sample.decode_steps)

    def forget(self, keep: Iterable[str]) -> None:
        """Drop the memory of pods not in ``keep``."""
        kept = set(keep)
        self.window.forget(kept)
        self.step_times.forget(kept)
        for pod in [p for p in self.cap_states if p not in kept]:
            del self.cap_states[pod]

    def windows(self, pods: Iterable[str], now: float) -> dict[str, PodWindow]:
        found: dict[str, PodWindow] = {}
        for pod in pods:
            summary = self.window.summary(pod, now, self.max_age_s)
            if summary is not None:
                found[pod] = summary
        return found

    def decide(
        self,
        now: float,
        current: int,
        ready: Sequence[str],
        loading: int,
        observed: Iterable[str] | None = None,
    ) -> LoopDecisions:
        """Decide replicas and each ready pod's caps. ``observed``: pods whose latest sample counts
        (default: every ready pod with a fresh window)."""
        result = LoopDecisions()
        result.windows = self.windows(ready if observed is None else observed, now)
        totals = [result.windows[p] for p in sorted(result.windows)]
        if result.windows and len(result.windows) == len(ready):
            self.waiting_history.append((now, sum(w.waiting_last for w in totals)))
        self.waiting_history = [(t, w) for t, w in self.waiting_history if t >= now - self.window.window_s]
        replica_policy, cap_policy = self.replica_policy, self.cap_policy
        if cap_policy is not None and cap_policy.refine_costs and cap_policy.cost_model is None:
            result.refinement = refine_costs(cap_policy.costs, self.step_times.totals())
            cap_policy = dataclasses.replace(cap_policy, costs=result.refinement.costs)
            if replica_policy is not None:
                replica_policy = dataclasses.replace(replica_policy, costs=result.refinement.costs)
        if replica_policy is not None:
            policy = replica_policy
            obs = replica_observation(
                now,
                current,
                len(ready),
                loading,
                totals,
                waiting_growth(self.waiting_history),
                policy.costs if policy.running_as_undrafted else None,
            )
            decision, self.replica_state = decide_replicas(policy, obs, self.replica_state)
            result.replica_observation, result.replicas = obs, decision
        if cap_policy is not None:
            for pod in ready:
                decision_, state = decide_cap(
                    cap_policy,
                    cap_observation(now, result.windows.get(pod)),
                    self.cap_states.get(pod, CapState()),
                )
                self.cap_states[pod] = state
                result.caps[pod] = decision_
        return result

    def states(self) -> Mapping[str, CapState]:
        return self.cap_states
