"""Engine metrics as plain data: Prometheus text -> ``PodSample``; samples -> ``PodWindow``.

Pure (no I/O). The parser is prometheus_client's. vLLM renames metrics between versions, so each
quantity is looked up under every name it has had (``ALIASES``); a quantity found under none of
them is reported in ``PodSample.missing`` and makes the sample incomplete.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

#: quantity -> the series names it has had, newest first. Counters are listed without ``_total``
#: (prometheus_client's parser strips it from the family name).
ALIASES: dict[str, tuple[str, ...]] = {
    "running": ("vllm:num_requests_running",),
    "waiting": ("vllm:num_requests_waiting",),
    "kv_cache_usage": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    "drafts": ("vllm:spec_decode_num_drafts",),
    "draft_tokens": ("vllm:spec_decode_num_draft_tokens",),
    "accepted_tokens": ("vllm:spec_decode_num_accepted_tokens",),
    "soft_cap": ("arctic_speculation_soft_cap",),
    "hard_cap": ("arctic_speculation_hard_cap",),
}

#: Quantities without which a sample is incomplete (the policies hold their last decision).
REQUIRED: tuple[str, ...] = ("running", "waiting")


class MetricsParseError(ValueError):
    """The body is not Prometheus text exposition format (the message says where it broke)."""


@dataclass(frozen=True)
class PodSample:
    """One scrape of one pod. Gauges are summed over label sets (one engine per pod, but vLLM labels
    series by model name and engine index); counters are cumulative as scraped."""

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

    @property
    def complete(self) -> bool:
        return not self.missing


def parse_metrics(text: str, time: float) -> PodSample:
    """Parse one /metrics body. Raises MetricsParseError on text that is not Prometheus format."""
    raise NotImplementedError


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


class MetricsWindow:
    """Per-pod samples of the last ``window_s`` seconds (bounded; old samples dropped on add)."""

    def __init__(self, window_s: float = 30.0) -> None:
        self.window_s = window_s
        raise NotImplementedError

    def add(self, pod: str, sample: PodSample) -> None:
        raise NotImplementedError

    def forget(self, keep: Iterable[str]) -> None:
        """Drop every pod not in ``keep`` (pods that are gone)."""
        raise NotImplementedError

    def summary(self, pod: str, now: float, max_age_s: float) -> PodWindow | None:
        """The pod's window, or None if it has no complete sample newer than ``max_age_s``."""
        raise NotImplementedError
