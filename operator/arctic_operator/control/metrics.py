"""Engine metrics as plain data: Prometheus text -> ``PodSample``; samples -> ``PodWindow``.

Pure (no I/O). The parser is prometheus_client's. vLLM renames metrics between versions, so each
quantity is looked up under every name it has had (``ALIASES``); a quantity found under none of
them is reported in ``PodSample.missing`` and makes the sample incomplete.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from arctic_runtime.contract import DECODE_STEP_METRICS, METRIC_HARD_CAP, METRIC_SOFT_CAP

#: quantity -> the series names it has had, newest first. Counters are listed without ``_total``
#: (prometheus_client's parser strips it from the family name).
ALIASES: dict[str, tuple[str, ...]] = {
    "running": ("vllm:num_requests_running",),
    "waiting": ("vllm:num_requests_waiting",),
    "kv_cache_usage": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    "drafts": ("vllm:spec_decode_num_drafts",),
    "draft_tokens": ("vllm:spec_decode_num_draft_tokens",),
    "accepted_tokens": ("vllm:spec_decode_num_accepted_tokens",),
    "generation_tokens": ("vllm:generation_tokens",),
    "prompt_tokens": ("vllm:prompt_tokens",),
    "requests_finished": ("vllm:request_success",),
    "soft_cap": (METRIC_SOFT_CAP,),
    "hard_cap": (METRIC_HARD_CAP,),
}

#: ``arctic_decode_step*`` series name -> its ``StepTotals`` field.
_DECODE_STEP_FIELDS: dict[str, str] = {name: key for key, name in DECODE_STEP_METRICS.items()}

#: Quantities without which a sample is incomplete (the policies hold their last decision).
REQUIRED: tuple[str, ...] = ("running", "waiting")


class MetricsParseError(ValueError):
    """The body is not Prometheus text exposition format (the message says where it broke)."""


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
        """Counters' growth from ``before`` (``counter_increase`` of each: a counter that went
        down was reset, the engine restarted, and counts from zero)."""
        return StepTotals(
            *(
                counter_increase((then, now))
                for now, then in zip(self._values(), before._values(), strict=True)
            )
        )

    def _values(self) -> tuple[float, float, float, float, float]:
        return (self.steps, self.seconds, self.requests, self.drafting, self.draft_tokens)


StepKey = tuple[int, bool]
"""(batch bucket, drafts verified in the steps)."""


@dataclass(frozen=True)
class PodSample:
    """One scrape of one pod. Gauges are summed over label sets (one engine per pod, but vLLM labels
    series by model name and engine index), except the KV cache usage, a fraction, which is
    averaged; counters are cumulative as scraped."""

    time: float
    """When it was scraped (seconds, the controller's clock)."""
    running: float | None
    """Requests in the running batch (vllm:num_requests_running)."""
    waiting: float | None
    """Requests queued for a batch slot (vllm:num_requests_waiting)."""
    kv_cache_usage: float | None
    """Fraction 0..1 of the KV cache in use."""
    drafts: float | None
    """Counter: draft proposals verified (one per drafting request per step)."""
    draft_tokens: float | None
    """Counter: draft tokens verified."""
    accepted_tokens: float | None
    """Counter: draft tokens accepted."""
    soft_cap: int | None
    """The engine's current soft cap (arctic_speculation_soft_cap; +Inf or absent: none)."""
    hard_cap: int | None
    """The engine's current hard cap (arctic_speculation_hard_cap; +Inf or absent: none)."""
    cap_reported: bool
    """Whether the arctic_speculation_* cap series were present (our plugin is on)."""
    missing: tuple[str, ...] = ()
    """Quantities of REQUIRED that were not found under any alias."""
    prompt_tokens: float | None = None
    """Counter: prompt tokens of the requests processed (vllm:prompt_tokens_total)."""
    requests_finished: float | None = None
    """Counter: requests finished, over every finish reason (vllm:request_success_total)."""
    generation_tokens: float | None = None
    """Counter: tokens generated, accepted draft tokens included (vllm:generation_tokens_total);
    less the accepted tokens, one per request-step."""
    decode_steps: Mapping[StepKey, StepTotals] | None = None
    """Counters: the engine's decode-only steps by (batch bucket, drafts verified) (the runtime's
    ``arctic_decode_step*`` series); None when the engine does not report them."""

    @property
    def complete(self) -> bool:
        return not self.missing


def _families(text: str) -> list[Metric]:
    try:
        return list(text_string_to_metric_families(text))
    except Exception as exc:  # the parser raises ValueError, and others on odd input
        raise MetricsParseError(f"not Prometheus text format: {exc}") from exc


def _series_values(families: list[Metric]) -> dict[str, list[float]]:
    """Sample name -> its values over label sets, for the series that carry a metric's value (a
    gauge's own series, a counter's ``_total``); histogram parts and ``_created`` are left out."""
    values: dict[str, list[float]] = {}
    for family in families:
        for sample in family.samples:
            if sample.name not in (family.name, family.name + "_total"):
                continue
            value = float(sample.value)
            if math.isnan(value):
                continue
            values.setdefault(sample.name, []).append(value)
    return values


def _decode_steps(families: list[Metric]) -> dict[StepKey, StepTotals] | None:
    """The ``arctic_decode_step*`` counters by (batch bucket, drafting on); None when the engine
    exports none of them. A series with a batch label that is not an integer, a drafting label
    other than on/off, or a value that is not a finite non-negative number is skipped."""
    found: dict[StepKey, dict[str, float]] = {}
    for family in families:
        for sample in family.samples:
            # a counter's series is name_total, however the exposition's TYPE line names it
            name = sample.name.removesuffix("_total")
            key = _DECODE_STEP_FIELDS.get(name) if name != sample.name else None
            if key is None:
                continue
            batch, drafting = sample.labels.get("batch", ""), sample.labels.get("drafting")
            value = float(sample.value)
            if not batch.isdigit() or drafting not in ("on", "off") or not math.isfinite(value) or value < 0:
                continue
            found.setdefault((int(batch), drafting == "on"), {})[key] = value
    if not found:
        return None
    return {step_key: StepTotals(**values) for step_key, values in found.items()}


def observed(values: list[float], quantity: str) -> list[float] | None:
    """The values a pod reported for ``quantity`` that count as observations: finite and >= 0 (a
    cap's +Inf, meaning "no cap", is kept). None when none is left, so one pod serving NaN, +Inf or a
    negative gauge counts as "not observed" instead of breaking the arithmetic of the whole loop."""
    kept = [
        v for v in values if v >= 0 and (math.isfinite(v) or (quantity in ("soft_cap", "hard_cap") and v > 0))
    ]
    return kept or None


def _lookup(values: dict[str, list[float]], quantity: str) -> list[float] | None:
    """The observed values of ``quantity`` under its newest name present (a counter with or without
    ``_total``), or None when it is under none of its names."""
    for name in ALIASES[quantity]:
        for series in (name, name + "_total"):
            if series in values:
                return observed(values[series], quantity)
    return None


def _total(values: dict[str, list[float]], quantity: str) -> float | None:
    found = _lookup(values, quantity)
    return None if found is None else math.fsum(found)


def _cap(values: dict[str, list[float]], quantity: str) -> int | None:
    total = _total(values, quantity)
    if total is None or math.isinf(total):
        return None
    return max(0, round(total))


def parse_metrics(text: str, time: float) -> PodSample:
    """Parse one /metrics body. Raises MetricsParseError on text that is not Prometheus format.

    Gauges and counters are summed over their label sets, except the KV cache usage, a fraction,
    which is averaged (summing would exceed 1 with two engines in a pod). NaN values are skipped.
    """
    families = _families(text)
    values = _series_values(families)
    kv = _lookup(values, "kv_cache_usage")
    sample = PodSample(
        time=time,
        running=_total(values, "running"),
        waiting=_total(values, "waiting"),
        kv_cache_usage=None if kv is None else math.fsum(kv) / len(kv),
        drafts=_total(values, "drafts"),
        draft_tokens=_total(values, "draft_tokens"),
        accepted_tokens=_total(values, "accepted_tokens"),
        prompt_tokens=_total(values, "prompt_tokens"),
        requests_finished=_total(values, "requests_finished"),
        generation_tokens=_total(values, "generation_tokens"),
        decode_steps=_decode_steps(families),
        soft_cap=_cap(values, "soft_cap"),
        hard_cap=_cap(values, "hard_cap"),
        cap_reported=_lookup(values, "soft_cap") is not None or _lookup(values, "hard_cap") is not None,
    )
    missing = tuple(quantity for quantity in REQUIRED if getattr(sample, quantity) is None)
    return dataclasses.replace(sample, missing=missing)


@dataclass(frozen=True)
class PodWindow:
    """What the policies see of one pod: its last ``window_s`` seconds of samples."""

    pod: str
    samples: int
    """Complete samples in the window."""
    running: float
    """Mean running requests over the window."""
    waiting: float
    """Mean waiting requests over the window."""
    waiting_last: float
    """Waiting requests at the newest sample."""
    kv_cache_usage: float | None
    """Mean KV cache usage, if reported."""
    accepted_per_draft: float | None
    """Accepted tokens per draft over the window (counter deltas); None when nothing was drafted."""
    acceptance_rate: float | None
    """Accepted / drafted tokens over the window; None when nothing was drafted."""
    drafts: float
    """Drafts verified in the window (counter delta; a counter reset counts from zero)."""
    soft_cap: int | None
    """Effective soft cap at the newest sample."""
    hard_cap: int | None
    """Effective hard cap at the newest sample."""
    newest: float
    """Time of the newest complete sample."""
    prompt_tokens_per_request: float | None = None
    """Prompt tokens over requests finished in the window (counter deltas); None when none
    finished. What a new request's prefill costs, on average."""
    request_steps: float | None = None
    """Request-steps in the window: generated tokens less accepted draft tokens (counter deltas;
    each running request makes one token a step, plus what its draft got accepted). None when the
    engine does not report generated tokens or made none."""


def counter_increase(values: Sequence[float]) -> float:
    """How much a counter grew over consecutive readings; a drop is a reset (the engine restarted),
    after which the counter counts from zero (Prometheus' ``increase`` without extrapolation)."""
    total = 0.0
    for before, after in itertools.pairwise(values):
        total += after - before if after >= before else after
    return total


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


class MetricsWindow:
    """Per-pod samples of the last ``window_s`` seconds (bounded; old samples dropped on add)."""

    max_samples: int = 1000
    """Most samples kept per pod, whatever their times (a bound on memory for a wrong clock or a
    very short scrape interval): 30 s at a scrape per second needs 30."""

    def __init__(self, window_s: float = 30.0) -> None:
        self.window_s = window_s
        """Seconds of samples kept and summarised per pod. 30: long enough to average the queue
        over several scrapes and to see drafts at low load; short enough to follow load changes."""
        self._samples: dict[str, deque[PodSample]] = {}

    def add(self, pod: str, sample: PodSample) -> None:
        samples = self._samples.setdefault(pod, deque(maxlen=self.max_samples))
        if samples and sample.time < samples[-1].time:
            samples.clear()  # the clock went back: the old samples can no longer be placed
        samples.append(sample)
        while samples[0].time < sample.time - self.window_s:
            samples.popleft()

    def forget(self, keep: Iterable[str]) -> None:
        """Drop every pod not in ``keep`` (pods that are gone)."""
        kept = set(keep)
        for pod in [pod for pod in self._samples if pod not in kept]:
            del self._samples[pod]

    def pods(self) -> tuple[str, ...]:
        """Pods with samples."""
        return tuple(self._samples)

    def samples(self, pod: str) -> tuple[PodSample, ...]:
        """The pod's samples kept, oldest first."""
        return tuple(self._samples.get(pod, ()))

    def summary(self, pod: str, now: float, max_age_s: float) -> PodWindow | None:
        """The pod's window, or None if it has no complete sample newer than ``max_age_s``.

        Means and counter increases use the complete samples of ``[now - window_s, now]``; the
        counters' increases run from the oldest to the newest of those that report them.
        """
        window = [
            sample
            for sample in self._samples.get(pod, ())
            if sample.complete and now - self.window_s <= sample.time <= now
        ]
        if not window or window[-1].time < now - max_age_s:
            return None
        newest = window[-1]
        running = [sample.running for sample in window if sample.running is not None]
        waiting = [sample.waiting for sample in window if sample.waiting is not None]
        kv = [sample.kv_cache_usage for sample in window if sample.kv_cache_usage is not None]
        drafts = counter_increase([sample.drafts for sample in window if sample.drafts is not None])
        draft_tokens = counter_increase(
            [sample.draft_tokens for sample in window if sample.draft_tokens is not None]
        )
        accepted = counter_increase(
            [sample.accepted_tokens for sample in window if sample.accepted_tokens is not None]
        )
        prompt = counter_increase(
            [sample.prompt_tokens for sample in window if sample.prompt_tokens is not None]
        )
        finished = counter_increase(
            [sample.requests_finished for sample in window if sample.requests_finished is not None]
        )
        generated = [sample for sample in window if sample.generation_tokens is not None]
        # the accepted tokens of the same samples, so that both increases span the same scrapes
        steps = counter_increase([s.generation_tokens for s in generated if s.generation_tokens is not None])
        steps -= counter_increase([s.accepted_tokens or 0.0 for s in generated])
        return PodWindow(
            pod=pod,
            samples=len(window),
            running=_mean(running),
            waiting=_mean(waiting),
            waiting_last=newest.waiting if newest.waiting is not None else 0.0,
            kv_cache_usage=_mean(kv) if kv else None,
            accepted_per_draft=accepted / drafts if drafts > 0 else None,
            acceptance_rate=accepted / draft_tokens if draft_tokens > 0 else None,
            drafts=drafts,
            soft_cap=newest.soft_cap,
            hard_cap=newest.hard_cap,
            newest=newest.time,
            prompt_tokens_per_request=prompt / finished if finished > 0 else None,
            request_steps=steps if steps > 0 else None,
        )
