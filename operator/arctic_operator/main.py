"""``arctic-serve operator``: run the kopf operator with the settings from the environment."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

from arctic_operator.settings import SettingsError, from_env


def run(overrides: Mapping[str, str] | None = None) -> int:
    """Start the operator; returns only when it stops. A bad setting is one line and exit code 2.
    ``overrides``: ARCTIC_OPERATOR_* values given as command-line flags (they win over the environment)."""
    try:
        settings = from_env({**os.environ, **(overrides or {})})
    except SettingsError as exc:
        print(f"arctic-serve operator: {exc}", file=sys.stderr)
        return 2
    import kopf

    from arctic_operator.handlers import login, register

    # one JSON object per line (kopf's formatter: timestamp, level, message, and the object it is about)
    kopf.configure(log_format=kopf.LogFormat.JSON, verbose=settings.log_level == "debug")
    logging.getLogger().setLevel(settings.log_level.upper())
    if settings.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port)  # kopf's and the process's own metrics
    registry = kopf.OperatorRegistry()
    # kopf's own login handlers live in its default registry only: a fresh one has none, and the
    # operator would never authenticate. Log in the way the Kubernetes client does (the pod's
    # service-account token in a cluster, $KUBECONFIG elsewhere), as Cluster does, with a bounded
    # connection pool (handlers.KOPF_CONNECTIONS).
    kopf.on.login(registry=registry)(login)
    register(registry, settings)
    namespaces = [settings.watch_namespace] if settings.watch_namespace else []
    kopf.run(
        registry=registry,
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz",
    )
    return 0
