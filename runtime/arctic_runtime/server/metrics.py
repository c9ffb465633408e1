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

#: How often the API server refreshes the snapshot, in seconds. One utility call per second is
#: negligible next to a decode step, and a Prometheus scrape interval is rarely below 5 s.
POLL_INTERVAL_S = 1.0


def _cap_value(value: int | None) -> float:
    return math.inf if value is None else float(value)


class ArcticCollector(Collector):
    """Renders the last engine-core snapshot handed to ``update``."""

    def __init__(self) -> None:
        self._speculation: Mapping[str, Any] | None = None
        self._updated: float | None = None

    def update(self, speculation: Mapping[str, Any]) -> None:
        self._speculation = speculation
        self._updated = time.time()

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("arctic_plugin_info", "arctic-serve runtime plugin", labels=["version"])
        info.add_metric([__version__], 1.0)
        yield info
        spec = self._speculation
        if spec is None or self._updated is None:
            return
        yield GaugeMetricFamily(
            "arctic_state_timestamp_seconds",
            "Unix time of the last engine-core snapshot behind the arctic_* series",
            value=self._updated,
        )
        yield GaugeMetricFamily(
            "arctic_speculation_soft_cap",
            "Soft cap: above this many running requests only this many draft (+Inf: no cap)",
            value=_cap_value(spec["soft_cap"]),
        )
        yield GaugeMetricFamily(
            "arctic_speculation_hard_cap",
            "Hard cap: at or above this many running requests nobody drafts (+Inf: no cap)",
            value=_cap_value(spec["hard_cap"]),
        )
        counters = spec["counters"]
        steps = CounterMetricFamily(
            "arctic_speculation_steps",
            "Scheduler steps with running requests, by what the cap allowed",
            labels=["mode"],
        )
        for mode, count in sorted(counters["steps"].items()):
            steps.add_metric([mode], float(count))
        yield steps
        drafting = CounterMetricFamily(
            "arctic_speculation_drafting_steps",
            "Scheduler steps in which at least one request carried draft tokens (on) or none did (off)",
            labels=["drafting"],
        )
        drafting.add_metric(["on"], float(counters["steps_drafting"]))
        drafting.add_metric(["off"], float(counters["steps_not_drafting"]))
        yield drafting
        requests = CounterMetricFamily(
            "arctic_speculation_request_steps",
            "Per step, running requests that drafted, or whose drafts the cap dropped",
            labels=["outcome"],
        )
        requests.add_metric(["drafted"], float(counters["request_steps_drafted"]))
        requests.add_metric(["dropped"], float(counters["request_steps_dropped"]))
        yield requests
        yield CounterMetricFamily(
            "arctic_speculation_cap_changes",
            "Times the speculation cap was changed while serving",
            value=float(counters["cap_changes"]),
        )
