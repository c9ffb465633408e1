"""The cost file refined from the pods' own decode steps. Pure.

The chart ships step times and verify costs measured once per GPU and model shape
(``cost.VerifyCosts``); a pod's real steps differ: other contexts, another driver, another
draft method's host work, a profile picked for the wrong GPU. The runtime times every decode-only
step by batch bucket and by whether drafts were verified in it (``arctic_decode_step*``,
``contract.DecodeStepTotals``). From those totals:

* **Decode step.** Steps without drafts, of mean batch b and mean time T: the factor T / the
  file's decode step at b. Between the buckets measured the factor is interpolated in log(batch),
  flat outside them; the refined decode step at each of the file's batch sizes is the file's times
  that factor.
* **Verify cost.** Steps with drafts, of mean batch b, a share f of whose requests drafted, of mean
  time T: a step with f of its requests drafting takes 1 + f x (c(b) - 1) plain steps (the cost
  model the policies use), so the measured verify cost is c = 1 + (T / the refined decode step at
  b - 1) / f. Its extra over a plain step against the file's (at the bucket's mean draft length)
  gives a factor on every draft length's extra, interpolated the same way.

A bucket counts once it holds ``min_steps`` steps of its kind; factors are bounded to
[``1 / max_factor``, ``max_factor``], so one odd bucket cannot turn the policy upside down. Without
the file's decode step times, the verify cost is measured against the same bucket's steps without
drafts. Totals decay with a half-life (``StepTimes``), so the refinement follows a pod whose load or
contexts change, and the service's pods (one GPU kind and model) pool their steps.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from arctic_operator.control.cost import VerifyCosts, interpolate_log


@dataclass(frozen=True)
class StepTotals:
    """Totals over decode steps of one batch bucket and drafting state (``DecodeStepTotals``)."""

    steps: float = 0.0
    seconds: float = 0.0
    requests: float = 0.0
    """Sum over the steps of their decoding requests."""
    drafting: float = 0.0
    """Sum over the steps of the requests with drafts verified."""
    draft_tokens: float = 0.0

    def plus(self, other: StepTotals, weight: float = 1.0) -> StepTotals:
        """self + weight x other."""
        return StepTotals(
            self.steps + weight * other.steps,
            self.seconds + weight * other.seconds,
            self.requests + weight * other.requests,
            self.drafting + weight * other.drafting,
            self.draft_tokens + weight * other.draft_tokens,
        )

    def scaled(self, factor: float) -> StepTotals:
        return StepTotals().plus(self, factor)

    def increase_since(self, before: StepTotals) -> StepTotals:
        """Counters' growth from ``before``; a counter that went down was reset (the engine
        restarted) and counts from zero."""
        return StepTotals(
            *(
                now - then if now >= then else now
                for now, then in zip(self._values(), before._values(), strict=True)
            )
        )

    def _values(self) -> tuple[float, float, float, float, float]:
        return (self.steps, self.seconds, self.requests, self.drafting, self.draft_tokens)


StepKey = tuple[int, bool]
"""(batch bucket, drafts verified in the steps)."""


class StepTimes:
    """The service's decode-step totals: every pod's counter growth, decayed with a half-life."""

    def __init__(self, half_life_s: float = 600.0) -> None:
        self.half_life_s = half_life_s
        """Seconds after which a step counts half. 600: minutes of steps, so a bucket fills at
        modest load, while a change of contexts or method shows within a quarter of an hour."""
        self._last: dict[str, tuple[float, Mapping[StepKey, StepTotals]]] = {}
        self._totals: dict[StepKey, StepTotals] = {}
        self._time: float | None = None

    def add(self, pod: str, time: float, cumulative: Mapping[StepKey, StepTotals]) -> None:
        """One scrape of ``pod``'s cumulative totals at ``time``. The first scrape of a pod only
        sets its baseline; a scrape older than the pod's last is ignored."""
        last = self._last.get(pod)
        if last is not None and time < last[0]:
            return
        self._last[pod] = (time, dict(cumulative))
        self._decay_to(time)
        if last is None:
            return
        before = last[1]
        for key, totals in cumulative.items():
            grown = totals.increase_since(before.get(key, StepTotals()))
            self._totals[key] = self._totals.get(key, StepTotals()).plus(grown)

    def _decay_to(self, time: float) -> None:
        if self._time is not None and time > self._time:
            factor = 0.5 ** ((time - self._time) / self.half_life_s)
            self._totals = {key: totals.scaled(factor) for key, totals in self._totals.items()}
        self._time = time if self._time is None else max(self._time, time)

    def forget(self, keep: Iterable[str]) -> None:
        """Drop the baselines of pods not in ``keep`` (their steps stay in the totals)."""
        kept = set(keep)
        for pod in [pod for pod in self._last if pod not in kept]:
            del self._last[pod]

    def totals(self) -> dict[StepKey, StepTotals]:
        return dict(self._totals)


@dataclass(frozen=True)
class Refinement:
    """The refined curves and what they came from."""

    costs: VerifyCosts
    decode_points: tuple[tuple[float, float], ...] = ()
    """(mean batch, measured / file decode step) of the buckets measured without drafts."""
    verify_points: tuple[tuple[float, float], ...] = ()
    """(mean batch, measured / file extra of a verify step over a plain one) of the buckets measured
    with drafts."""
    steps: float = 0.0
    """Decode steps (decayed) in the buckets used."""
    notes: tuple[str, ...] = field(default_factory=tuple)
    """Buckets left out, and why."""

    @property
    def refined(self) -> bool:
        return bool(self.decode_points or self.verify_points)

    def factor_at(self, batch: float) -> tuple[float | None, float | None]:
        """(decode step factor, verify extra factor) at ``batch``; None where nothing was measured."""
        return (_factor(self.decode_points, batch), _factor(self.verify_points, batch))


def _factor(points: tuple[tuple[float, float], ...], batch: float) -> float | None:
    if not points:
        return None
    return interpolate_log([b for b, _ in points], [f for _, f in points], max(1.0, batch))


def _points(raw: list[tuple[float, float, float]]) -> tuple[tuple[float, float], ...]:
    """(batch, factor, weight) -> one point per distinct batch (weighted mean), batch increasing."""
    merged: dict[float, tuple[float, float]] = {}
    for batch, factor, weight in raw:
        total, weights = merged.get(batch, (0.0, 0.0))
        merged[batch] = (total + factor * weight, weights + weight)
    return tuple((batch, total / weights) for batch, (total, weights) in sorted(merged.items()))


def refine_costs(
    costs: VerifyCosts,
    totals: Mapping[StepKey, StepTotals],
    *,
    min_steps: float = 200.0,
    max_factor: float = 4.0,
) -> Refinement:
    """``costs`` with decode step times and verify costs scaled to the measured steps (see the
    module docstring); ``costs`` itself where nothing counts yet."""
    low, high = 1 / max_factor, max_factor
    notes: list[str] = []
    decode_raw: list[tuple[float, float, float]] = []
    used = 0.0
    plain = {bucket: t for (bucket, drafting), t in totals.items() if not drafting}
    for _bucket, t in sorted(plain.items()):
        if t.steps < min_steps or t.requests <= 0 or t.seconds <= 0:
            continue
        batch, step = t.requests / t.steps, t.seconds / t.steps
        file_step = costs.decode_step(batch)
        if file_step is None:
            break  # the file has no step times: nothing to scale
        decode_raw.append((batch, min(high, max(low, step / file_step)), t.steps))
        used += t.steps
    decode_points = _points(decode_raw)
    steps_s = costs.decode_step_s
    if decode_points:
        steps_s = tuple(
            s * (_factor(decode_points, b) or 1.0) for b, s in zip(costs.batch_sizes, steps_s, strict=True)
        )

    def plain_step(bucket: int, batch: float) -> float | None:
        if steps_s:
            return interpolate_log(costs.batch_sizes, steps_s, max(1.0, batch))
        same = plain.get(bucket)
        if same is None or same.steps < min_steps or same.seconds <= 0:
            return None
        return same.seconds / same.steps

    verify_raw: list[tuple[float, float, float]] = []
    for (bucket, drafting), t in sorted(totals.items()):
        if not drafting or t.steps < min_steps or t.requests <= 0 or t.drafting <= 0 or t.seconds <= 0:
            continue
        batch, share = t.requests / t.steps, min(1.0, t.drafting / t.requests)
        base = plain_step(bucket, batch)
        if base is None:
            notes.append(f"batch <= {bucket}: no plain step to compare the drafting steps with")
            continue
        measured_extra = max(0.0, (t.seconds / t.steps / base - 1) / share)
        file_extra = costs.model_for(t.draft_tokens / t.drafting).cost(max(1.0, batch)) - 1
        if file_extra <= 0:
            notes.append(f"batch <= {bucket}: the file's verify cost is not above a plain step")
            continue
        verify_raw.append((batch, min(high, max(low, measured_extra / file_extra)), t.steps))
        used += t.steps
    verify_points = _points(verify_raw)
    by_k = costs.by_draft_len
    if verify_points:
        by_k = tuple(
            (
                k,
                tuple(
                    1 + (r - 1) * (_factor(verify_points, b) or 1.0)
                    for b, r in zip(costs.batch_sizes, ratios, strict=True)
                ),
            )
            for k, ratios in costs.by_draft_len
        )
    if not (decode_points or verify_points):
        return Refinement(costs, notes=tuple(notes))
    refined = VerifyCosts(
        batch_sizes=costs.batch_sizes,
        by_draft_len=by_k,
        gpu=costs.gpu,
        model_shape=costs.model_shape,
        source=f"{costs.source}; refined from {used:.0f} of the pods' decode steps",
        decode_step_s=steps_s,
        prefill_s_per_token=costs.prefill_s_per_token,
    )
    return Refinement(refined, decode_points, verify_points, used, tuple(notes))
