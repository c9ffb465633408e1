"""kopf handlers: thin adapters from kopf's events and timer to ``reconcile``.

Every event (create, update, resume after an operator restart) and a timer every
``resync_seconds`` run the same level-based pass, so a lost event costs one interval, not
correctness. Handlers only ever patch ``status`` and post events; the spec belongs to the user.

``register(registry, settings)`` adds the handlers to a kopf registry (a fresh one in tests, kopf's
default one in ``arctic-serve operator``).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Callable
from typing import Any

import kopf
from prometheus_client import Counter, Histogram

from arctic_operator.api import GROUP, PLURAL, VERSION
from arctic_operator.reconcile import Cluster, reconcile
from arctic_operator.settings import OperatorSettings

RECONCILES = Counter(
    "arctic_operator_reconciles_total",
    "Reconcile passes over ArcticInferenceServices, by result (ok, invalid_spec, error).",
    ["result"],
)
RECONCILE_SECONDS = Histogram("arctic_operator_reconcile_seconds", "Time of one reconcile pass.")
APPLIED = Counter(
    "arctic_operator_objects_applied_total", "Child objects created or patched, by action.", ["action"]
)


def cluster_from_environment() -> Cluster:
    """In a pod: the service account; elsewhere: $KUBECONFIG (or ~/.kube/config)."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)  # type: ignore[no-untyped-call]
    return Cluster(client.ApiClient())


def register(
    registry: kopf.OperatorRegistry,
    op_settings: OperatorSettings,
    make_cluster: Callable[[], Cluster] = cluster_from_environment,
) -> None:
    """Add the operator's handlers to ``registry``; ``make_cluster`` gives the API access (once)."""
    clusters: list[Cluster] = []

    def cluster() -> Cluster:
        if not clusters:
            clusters.append(make_cluster())
        return clusters[0]

    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.level = logging.INFO
        settings.peering.standalone = True  # one active replica: the chart runs 1 with Recreate
        settings.persistence.finalizer = f"{GROUP}/operator"
        # kopf's own bookkeeping goes to annotations, never into our status schema
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
        settings.watching.server_timeout = 300

    def run(body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, **_: Any) -> None:
        with RECONCILE_SECONDS.time():
            try:
                outcome = reconcile(body, cluster(), op_settings, dt.datetime.now(dt.UTC))
            except Exception:
                RECONCILES.labels(result="error").inc()
                raise  # kopf retries with backoff and logs it
        invalid = any(reason == "InvalidSpec" for _, reason, _ in outcome.events)
        RECONCILES.labels(result="invalid_spec" if invalid else "ok").inc()
        for action in ("created", "patched"):
            APPLIED.labels(action=action).inc(sum(a.endswith(action) for a in outcome.applied))
        patch.status.update(outcome.status)
        for kind, reason, message in outcome.events:
            kopf.event(body, type=kind, reason=reason, message=message[:1024])
        changed = [a for a in outcome.applied if not a.endswith("unchanged")]
        if changed:
            logger.info("applied: %s", ", ".join(changed))

    kopf.on.startup(registry=registry)(configure)
    for decorator in (
        kopf.on.create(GROUP, VERSION, PLURAL, registry=registry, id="reconcile-create"),
        kopf.on.update(GROUP, VERSION, PLURAL, registry=registry, id="reconcile-update", field="spec"),
        kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry, id="reconcile-resume"),
        kopf.timer(
            GROUP,
            VERSION,
            PLURAL,
            registry=registry,
            id="resync",
            interval=op_settings.resync_seconds,
            idle=5,
        ),
    ):
        decorator(run)
