"""``arctic_*`` Prometheus series on the OpenAI server's /metrics.

The engine core keeps the counters (it is the only process that sees every scheduler step); the API
server polls them through ``collective_rpc`` and this collector renders the latest snapshot. The
series live beside vLLM's own ``vllm:*`` series in prometheus_client's default registry. (vLLM's
``PrometheusStatLogger`` drops collectors named ``vllm:*`` when it starts, hence our own prefix.)
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from arctic_runtime import __version__
from arctic_runtime.contract import (
    DECODE_STEP_METRICS,
    METRIC_CAP_CHANGES,
    METRIC_DRAFTING_STEPS,
    METRIC_HARD_CAP,
    METRIC_PARALLEL_INFO,
    METRIC_PARALLEL_STEPS,
    METRIC_PARALLEL_TOKENS,
    METRIC_PHASE_STEPS,
    METRIC_PLUGIN_INFO,
    METRIC_REQUEST_STEPS,
    METRIC_SHIFT_THRESHOLD,
    METRIC_SOFT_CAP,
    METRIC_SPECULATION_STEPS,
    METRIC_STATE_TIMESTAMP,
)

#: How often the API server refreshes the snapshot, in seconds. One utility call per second is
#: negligible next to a decode step, and a Prometheus scrape interval is rarely below 5 s.
POLL_INTERVAL_S = 1.0


def _cap_value(value: int | None) -> float:
    return math.inf if value is None else float(value)


#: Help text of each ``DecodeStepTotals`` key's series (names: ``contract.DECODE_STEP_METRICS``).
DECODE_STEP_HELP: dict[str, str] = {
    "steps": "Decode-only steps timed while the engine stayed busy, by batch bucket and drafting",
    "seconds": "Wall seconds of those steps (previous step's output to their own)",
    "requests": "Decoding requests summed over those steps (mean batch: requests / steps)",
    "drafting": "Requests with drafts verified, summed over those steps",
    "draft_tokens": "Draft tokens verified, summed over those steps",
}


def _decode_step_metrics(
    decode_steps: Mapping[str, Mapping[str, Mapping[str, float]]] | None,
) -> Iterator[Metric]:
    """The ``arctic_decode_step*`` series, labels ``batch`` (the bucket) and ``drafting`` (on/off),
    from the counters' ``decode_steps``; none from an engine too old to report them."""
    if decode_steps is None:
        return
    rows = sorted(decode_steps.items(), key=lambda item: int(item[0]))
    for key, name in DECODE_STEP_METRICS.items():
        family = CounterMetricFamily(name, DECODE_STEP_HELP[key], labels=["batch", "drafting"])
        for bucket, states in rows:
            for drafting, totals in sorted(states.items()):
                family.add_metric([bucket, drafting], float(totals[key]))
        yield family


class ArcticCollector(Collector):
    """Renders the last engine-core snapshot handed to ``update`` (the ``arctic_get_state`` answer:
    its ``speculation`` and ``parallel`` parts)."""

    def __init__(self) -> None:
        self._speculation: Mapping[str, Any] | None = None
        self._parallel: Mapping[str, Any] | None = None
        self._updated: float | None = None

    def update(self, state: Mapping[str, Any]) -> None:
        self._speculation = state["speculation"]
        self._parallel = state.get("parallel")
        self._updated = time.time()

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(METRIC_PLUGIN_INFO, "arctic-serve runtime plugin", labels=["version"])
        info.add_metric([__version__], 1.0)
        yield info
        spec = self._speculation
        if spec is None or self._updated is None:
            return
        yield GaugeMetricFamily(
            METRIC_STATE_TIMESTAMP,
            "Unix time of the last engine-core snapshot behind the arctic_* series",
            value=self._updated,
        )
        yield GaugeMetricFamily(
            METRIC_SOFT_CAP,
            "Soft cap: above this many running requests only this many draft (+Inf: no cap)",
            value=_cap_value(spec["soft_cap"]),
        )
        yield GaugeMetricFamily(
            METRIC_HARD_CAP,
            "Hard cap: at or above this many running requests nobody drafts (+Inf: no cap)",
            value=_cap_value(spec["hard_cap"]),
        )
        counters = spec["counters"]
        steps = CounterMetricFamily(
            METRIC_SPECULATION_STEPS,
            "Scheduler steps with running requests, by what the cap allowed (prefill: nobody, the "
            "step carries prefill work and drafts_in_prefill_steps is off)",
            labels=["mode"],
        )
        for mode, count in sorted(counters["steps"].items()):
            steps.add_metric([mode], float(count))
        yield steps
        drafting = CounterMetricFamily(
            METRIC_DRAFTING_STEPS,
            "Scheduler steps in which at least one request carried draft tokens (on) or none did (off)",
            labels=["drafting"],
        )
        drafting.add_metric(["on"], float(counters["steps_drafting"]))
        drafting.add_metric(["off"], float(counters["steps_not_drafting"]))
        yield drafting
        requests = CounterMetricFamily(
            METRIC_REQUEST_STEPS,
            "Per step, running requests that drafted, or whose drafts the cap dropped",
            labels=["outcome"],
        )
        requests.add_metric(["drafted"], float(counters["request_steps_drafted"]))
        requests.add_metric(["dropped"], float(counters["request_steps_dropped"]))
        yield requests
        phases = CounterMetricFamily(
            METRIC_PHASE_STEPS,
            "Scheduler steps with running requests, by what they scheduled (prefill work or decode "
            "only) and whether drafts were verified in them (on) or not (off)",
            labels=["phase", "drafting"],
        )
        for phase, counts in sorted(counters["phase_steps"].items()):
            for drafting, count in sorted(counts.items()):
                phases.add_metric([phase, drafting], float(count))
        yield phases
        yield CounterMetricFamily(
            METRIC_CAP_CHANGES,
            "Times the speculation cap was changed while serving",
            value=float(counters["cap_changes"]),
        )
        yield from _decode_step_metrics(counters.get("decode_steps"))
        yield from self._parallel_metrics()

    def _parallel_metrics(self) -> Iterator[Metric]:
        """The Ulysses / Shift Parallelism series (absent when the engine runs without Ulysses)."""
        par = self._parallel
        if not par or par["ulysses"] <= 1:
            return
        info = GaugeMetricFamily(
            METRIC_PARALLEL_INFO,
            "Parallel layout of the engine: tensor x ulysses ranks, shift on or off",
            labels=["tensor", "ulysses", "shift"],
        )
        info.add_metric([str(par["tensor"]), str(par["ulysses"]), str(par["shift"]).lower()], 1.0)
        yield info
        if par["shift_threshold"] is not None:
            yield GaugeMetricFamily(
                METRIC_SHIFT_THRESHOLD,
                "Scheduled tokens per step at or below which a step runs in full tensor parallelism",
                value=float(par["shift_threshold"]),
            )
        for name, key, text in (
            (
                METRIC_PARALLEL_STEPS,
                "steps",
                "Engine steps by parallel mode (tp: full tensor, sp: Ulysses x tensor)",
            ),
            (METRIC_PARALLEL_TOKENS, "tokens", "Tokens scheduled in steps of each parallel mode"),
        ):
            family = CounterMetricFamily(name, text, labels=["mode"])
            for mode, count in sorted(par[key].items()):
                family.add_metric([mode], float(count))
            yield family
