"""The cost file's verify costs refined from the pods' own decode steps. Pure.

The chart ships verify costs (a decode step with k-token drafts over one without, by batch size)
measured once per GPU and model shape (``cost.VerifyCosts``); a pod's real steps differ: another
draft method's host work, another driver, a profile picked for the wrong GPU. The runtime times
every decode-only step by batch bucket and by whether drafts were verified in it
(``arctic_decode_step*``, ``contract.DecodeStepTotals``). In a bucket that holds both kinds:

* the plain steps, of mean batch b0 and mean time T0, and the steps with drafts, of mean batch b,
  a share f of whose requests drafted, of mean time T. A step with f of its requests drafting takes
  1 + f x (c(b) - 1) plain steps (the cost model the policies use), so the measured verify cost is
  c = 1 + (T / T0' - 1) / f, where T0' is T0 moved from b0 to b along the file's decode steps
  (T0 itself without them).
* Its difference from the file's cost at b (at the bucket's mean draft length) is added to every
  draft length's curve, interpolated in log(batch) between the buckets measured and flat outside
  them. A difference, not a factor: measured costs near 1 (the served H200 file has some below 1,
  within its noise) leave no extra to scale.

Both kinds come from the same bucket, so what the cost model leaves out (the contexts' attention
reads, which grow with the load, not with drafting) cancels. A bucket counts once it holds
``min_steps`` steps of each kind; differences are bounded to +-``max_change`` plain steps and a
refined cost is never below ``MIN_VERIFY_COST``, so one odd bucket cannot turn the policy upside
down. A bucket with steps of one kind only (under a cap every request of a small batch drafts) is
left as the file says. The decode step times themselves are not refined. Totals decay with a
half-life (``StepTimes``), so the refinement follows a pod whose drafts or contexts change, and the
service's pods (one GPU kind and model) pool their steps.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from arctic_operator.control.cost import VerifyCosts, interpolate_log
from arctic_operator.control.metrics import StepKey, StepTotals


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
    points: tuple[tuple[float, float], ...] = ()
    """(mean batch, measured - file verify cost, in plain steps) of the buckets measured, batch
    increasing."""
    steps: float = 0.0
    """Decode steps (decayed) in the buckets used."""

    @property
    def refined(self) -> bool:
        return bool(self.points)

    def change_at(self, batch: float) -> float | None:
        """The verify cost's change at ``batch``; None when nothing was measured."""
        if not self.points:
            return None
        return interpolate_log([b for b, _ in self.points], [c for _, c in self.points], max(1.0, batch))


MIN_VERIFY_COST = 0.5
"""The lowest refined verify cost (a step with drafts over one without)."""


def refine_costs(
    costs: VerifyCosts,
    totals: Mapping[StepKey, StepTotals],
    *,
    min_steps: float = 200.0,
    max_change: float = 1.0,
) -> Refinement:
    """``costs`` with verify costs moved to the ones measured (see the module docstring);
    ``costs`` itself where no bucket counts yet."""
    raw: dict[float, tuple[float, float]] = {}  # mean batch -> (sum of change x steps, steps)
    used = 0.0
    for (bucket, drafting), t in sorted(totals.items()):
        plain = totals.get((bucket, False))
        if not drafting or plain is None:
            continue
        if min(t.steps, plain.steps) < min_steps or min(t.requests, plain.requests, t.drafting) <= 0:
            continue
        if min(t.seconds, plain.seconds) <= 0:
            continue
        batch, plain_batch = t.requests / t.steps, plain.requests / plain.steps
        base = plain.seconds / plain.steps
        here, there = costs.decode_step(batch), costs.decode_step(plain_batch)
        if here is not None and there is not None:
            base *= here / there
        share = min(1.0, t.drafting / t.requests)
        measured = 1 + (t.seconds / t.steps / base - 1) / share
        change = measured - costs.model_for(t.draft_tokens / t.drafting).cost(max(1.0, batch))
        total, weight = raw.get(batch, (0.0, 0.0))
        raw[batch] = (total + max(-max_change, min(max_change, change)) * t.steps, weight + t.steps)
        used += t.steps + plain.steps
    if not raw:
        return Refinement(costs)
    points = tuple((batch, total / weight) for batch, (total, weight) in sorted(raw.items()))
    result = Refinement(costs, points, used)
    refined = VerifyCosts(
        batch_sizes=costs.batch_sizes,
        by_draft_len=tuple(
            (
                k,
                tuple(
                    max(MIN_VERIFY_COST, r + (result.change_at(b) or 0.0))
                    for b, r in zip(costs.batch_sizes, ratios, strict=True)
                ),
            )
            for k, ratios in costs.by_draft_len
        ),
        gpu=costs.gpu,
        model_shape=costs.model_shape,
        source=f"{costs.source}; verify costs refined from {used:.0f} of the pods' decode steps",
        decode_step_s=costs.decode_step_s,
        prefill_s_per_token=costs.prefill_s_per_token,
    )
    return Refinement(refined, points, used)
