"""One ``ServiceController`` per ArcticInferenceService: scrape its ready pods, run the policies,
apply the results (replicas on the workload, caps through each pod's admin API), and describe it
all for status. I/O lives here and in ``scrape``/``admin_client``; decisions in ``replicas``/``cap``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PodTarget:
    """A pod the controller looks at."""

    name: str
    ready: bool
    metrics_url: str | None
    """http://IP:PORT/metrics; None while the pod has no IP."""
    admin_url: str | None
    """http://IP:PORT (the runtime's admin API lives under /arctic/v1)."""


@dataclass
class TickResult:
    """What one tick decided and did, for status, events and logs."""

    replicas: Any | None = None
    """ReplicaDecision, or None when autoscaling is off."""
    caps: dict[str, Any] = field(default_factory=dict)
    """pod -> CapDecision (cap controller on)."""
    pushed: dict[str, str] = field(default_factory=dict)
    """pod -> "ok" or the error of pushing its cap."""
    scrape_errors: dict[str, str] = field(default_factory=dict)
    """pod -> why its metrics could not be read this tick."""
    status: dict[str, Any] = field(default_factory=dict)
    """The status fields to patch (camelCase)."""
