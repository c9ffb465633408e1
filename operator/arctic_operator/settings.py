"""The operator's settings, from the environment the Helm chart sets (``ARCTIC_OPERATOR_*``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arctic_operator.control.cost import DEFAULT_COSTS, VerifyCosts
from arctic_operator.plan import DEFAULT_CPU_IMAGE, DEFAULT_IMAGE


class SettingsError(ValueError):
    """An ``ARCTIC_OPERATOR_*`` variable with a value that is not allowed (the message names it)."""


@dataclass(frozen=True)
class OperatorSettings:
    watch_namespace: str = ""
    """Namespace to watch; empty: every namespace (cluster-wide RBAC). ARCTIC_OPERATOR_WATCH_NAMESPACE."""
    health_port: int = 8080
    """Port of GET /healthz (liveness and readiness of the operator pod). ARCTIC_OPERATOR_HEALTH_PORT."""
    metrics_port: int = 9090
    """Port of the operator's own Prometheus metrics; 0: off. ARCTIC_OPERATOR_METRICS_PORT."""
    log_level: str = "info"
    """debug, info, warning or error. ARCTIC_OPERATOR_LOG_LEVEL."""
    runtime_image: str = DEFAULT_IMAGE
    """Engine image for GPU pods of resources that name none. ARCTIC_OPERATOR_RUNTIME_IMAGE."""
    runtime_cpu_image: str = DEFAULT_CPU_IMAGE
    """Engine image for CPU pods (gpusPerPod 0). ARCTIC_OPERATOR_RUNTIME_CPU_IMAGE."""
    monitoring: bool = False
    """Whether the chart granted RBAC for ServiceMonitors/PodMonitors (they are made only if the
    cluster also serves their CRDs). ARCTIC_OPERATOR_MONITORING."""
    resync_seconds: float = 60.0
    """How often every resource is reconciled even without events: drift on the objects the
    operator owns (a hand-edited Deployment) is put back within this time. ARCTIC_OPERATOR_RESYNC_SECONDS."""
    scrape_seconds: float = 5.0
    """How often the control loop scrapes the engines' /metrics and decides replicas and speculation
    caps, for resources with spec.autoscaling or spec.speculation.capController.enabled.
    ARCTIC_OPERATOR_SCRAPE_SECONDS."""
    network_policy: bool = False
    """Whether each ArcticInferenceService gets a NetworkPolicy admitting only the operator's pods
    to the engines' admin port (the chart's networkPolicy.enabled, which grants the RBAC).
    ARCTIC_OPERATOR_NETWORK_POLICY, with the operator's namespace (ARCTIC_OPERATOR_NAMESPACE) and
    pod labels (ARCTIC_OPERATOR_POD_LABELS, ``k=v,k=v``) to select its pods by."""
    namespace: str = ""
    """The operator pod's namespace (the chart sets it from the downward API)."""
    pod_labels: tuple[tuple[str, str], ...] = ()
    """The operator pods' selector labels."""
    costs: VerifyCosts = DEFAULT_COSTS
    """Verify-cost curves of the GPU and model shape the engines run, for the cap controller: the
    JSON file named by ARCTIC_OPERATOR_COST_FILE (the chart mounts its costs ConfigMap); empty: the
    built-in H100 / Llama-3.1-8B curves."""

    @property
    def admin_peer(self) -> dict[str, Any] | None:
        """The NetworkPolicyPeer selecting the operator's pods, or None without network policies."""
        if not self.network_policy:
            return None
        return {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": self.namespace}},
            "podSelector": {"matchLabels": dict(self.pod_labels)},
        }


def _labels(raw: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in raw.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep or not key:
            raise SettingsError(
                f"ARCTIC_OPERATOR_POD_LABELS: must be key=value pairs joined by commas, got {raw!r}"
            )
        pairs.append((key, value))
    return tuple(sorted(pairs))


def _port(env: Mapping[str, str], name: str, default: int, allow_zero: bool = False) -> int:
    raw = env.get(name, "")
    if raw == "":
        return default
    low = 0 if allow_zero else 1
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}: must be a port number {low}..65535, got {raw!r}") from None
    if not low <= value <= 65535:
        raise SettingsError(f"{name}: must be a port number {low}..65535, got {raw!r}")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float, high: float) -> float:
    raw = env.get(name, "")
    try:
        value = float(raw) if raw else default
    except ValueError:
        value = -1.0
    if not 1.0 <= value <= high:
        raise SettingsError(f"{name}: must be 1..{high:g} seconds, got {raw!r}")
    return value


def from_env(env: Mapping[str, str] | None = None) -> OperatorSettings:
    """Settings from ``env`` (default: the process environment); SettingsError names a bad variable."""
    env = os.environ if env is None else env
    level = env.get("ARCTIC_OPERATOR_LOG_LEVEL", "info").lower() or "info"
    if level not in {"debug", "info", "warning", "error"}:
        raise SettingsError(
            f"ARCTIC_OPERATOR_LOG_LEVEL: must be debug, info, warning or error, got {level!r}"
        )
    monitoring = env.get("ARCTIC_OPERATOR_MONITORING", "false").lower()
    if monitoring not in {"true", "false", ""}:
        raise SettingsError(f"ARCTIC_OPERATOR_MONITORING: must be true or false, got {monitoring!r}")
    resync = _seconds(env, "ARCTIC_OPERATOR_RESYNC_SECONDS", 60.0, 86400.0)
    scrape = _seconds(env, "ARCTIC_OPERATOR_SCRAPE_SECONDS", 5.0, 3600.0)
    network_policy = env.get("ARCTIC_OPERATOR_NETWORK_POLICY", "false").lower()
    if network_policy not in {"true", "false", ""}:
        raise SettingsError(f"ARCTIC_OPERATOR_NETWORK_POLICY: must be true or false, got {network_policy!r}")
    namespace = env.get("ARCTIC_OPERATOR_NAMESPACE", "")
    pod_labels: tuple[tuple[str, str], ...] = ()
    if network_policy == "true":
        if not namespace:
            raise SettingsError(
                "ARCTIC_OPERATOR_NAMESPACE: must name the operator's namespace when "
                "ARCTIC_OPERATOR_NETWORK_POLICY is true (the NetworkPolicy admits the operator's pods by it)"
            )
        pod_labels = _labels(env.get("ARCTIC_OPERATOR_POD_LABELS", ""))
    costs = DEFAULT_COSTS
    if env.get("ARCTIC_OPERATOR_COST_FILE"):
        try:
            costs = VerifyCosts.load(Path(env["ARCTIC_OPERATOR_COST_FILE"]))
        except ValueError as exc:
            raise SettingsError(f"ARCTIC_OPERATOR_COST_FILE: {exc}") from None
    return OperatorSettings(
        watch_namespace=env.get("ARCTIC_OPERATOR_WATCH_NAMESPACE", ""),
        health_port=_port(env, "ARCTIC_OPERATOR_HEALTH_PORT", 8080),
        metrics_port=_port(env, "ARCTIC_OPERATOR_METRICS_PORT", 9090, allow_zero=True),
        log_level=level,
        runtime_image=env.get("ARCTIC_OPERATOR_RUNTIME_IMAGE") or DEFAULT_IMAGE,
        runtime_cpu_image=env.get("ARCTIC_OPERATOR_RUNTIME_CPU_IMAGE") or DEFAULT_CPU_IMAGE,
        monitoring=monitoring == "true",
        resync_seconds=resync,
        scrape_seconds=scrape,
        network_policy=network_policy == "true",
        namespace=namespace,
        pod_labels=pod_labels,
        costs=costs,
    )
