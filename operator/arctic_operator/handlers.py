"""kopf handlers: thin adapters from kopf's events to ``reconcile``, and the operator's own loops.

Every event (create, update, resume after an operator restart) and a resync every
``resync_seconds`` run the same level-based pass, so a lost event costs one interval, not
correctness. Handlers only ever patch ``status`` and post events; the spec belongs to the user.

The resync and the control loop (``control``, issue 6) are the operator's own asyncio tasks
(``arctic_operator.loops``), started at kopf's startup over a kopf index of the resources that keeps
a few fields of each: kopf keeps the whole latest body of every object of a kind that has a kopf
timer or daemon, ~40 MB at 1,000 resources (issue 15). The resync reads each due resource live and
runs ``live_pass``, the pass the workload events run too. The control loop is a task per resource
with spec.autoscaling or spec.speculation.capController.enabled: every ``scrape_seconds`` it runs
``control.kube.control_pass`` (scrape the pods, decide, set replicas on the workload and caps on the
pods, patch status.autoscaling/capController/pods). Its in-memory state (``ServiceController``:
metric windows, recent decisions) lives in the task, so it goes with the resource (or when the spec
turns the loop off, which also clears its status fields), and comes back fresh when the operator
restarts. Outside kopf's handlers, Events are posted through the operator's own client
(``post_event``), in kopf's format.

Children are read from kopf indexes (``arctic_operator.cache``: one per child kind, fed by kopf's
watches, holding a few fields of each object), not listed from the API server on every pass: a
settled resource's resync sends one read (its admin Secret). Engine pods are not watched: a pass
lists them only while the workload is not all ready. kopf fills every index before any handler
runs, so a pass after a restart sees the children that exist.

``register(registry, settings)`` adds the handlers to a kopf registry (a fresh one in tests, kopf's
default one in ``arctic-serve operator``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any, cast

import kopf
from prometheus_client import Counter, Histogram

from arctic_operator.api import GROUP, KIND, PLURAL, VERSION
from arctic_operator.cache import COMMON_LABELS, IndexCache, index_child
from arctic_operator.control.controller import ServiceController
from arctic_operator.control.kube import ControlTuning, clear_status, control_pass
from arctic_operator.loops import ControlTasks, ServiceEntry, index_service, resync_loop
from arctic_operator.reconcile import (
    CHILD_KINDS,
    NETWORK_POLICY_KIND,
    Cluster,
    Outcome,
    Settled,
    first_pass,
    reconcile,
)
from arctic_operator.settings import OperatorSettings
from arctic_operator.status import reconcile_status_patch

RECONCILES = Counter(
    "arctic_operator_reconciles_total",
    "Reconcile passes over ArcticInferenceServices, by result (ok, invalid_spec, error).",
    ["result"],
)
#: The client's default buckets jump from 1 s to 2.5 s: a reconcile p99 of 1.43 s (measured per pass)
#: read 2.10 s interpolated in them (issue 15's target is p99 < 1 s). These add finer steps around
#: a second and keep every default bound (results before and after compare in the old buckets).
RECONCILE_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.9,
    1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 5.0, 7.5, 10.0, 30.0, float("inf"),
)  # fmt: skip
RECONCILE_SECONDS = Histogram(
    "arctic_operator_reconcile_seconds", "Time of one reconcile pass.", buckets=RECONCILE_BUCKETS
)
#: The first passes alone (``reconcile.first_pass``: a new resource, or the first pass after a restart),
#: also in the histogram above: they create the children, and they are its tail (issue 15).
FIRST_RECONCILE_SECONDS = Histogram(
    "arctic_operator_first_reconcile_seconds",
    "Time of a resource's first reconcile pass in this process (no child known settled).",
    buckets=RECONCILE_BUCKETS,
)
APPLIED = Counter(
    "arctic_operator_objects_applied_total",
    "Child objects created, updated or deleted, by action.",
    ["action"],
)


#: The plural of each kind of child (``reconcile.CHILD_KINDS``, ``NETWORK_POLICY_KIND``): kopf watches
#: them by (group, version, plural).
PLURALS = {
    "Deployment": "deployments",
    "StatefulSet": "statefulsets",
    "Service": "services",
    "PodDisruptionBudget": "poddisruptionbudgets",
    "NetworkPolicy": "networkpolicies",
}


#: The id of kopf's index of the ArcticInferenceServices (``loops.index_service``).
SERVICES_INDEX = "service_index"
#: An Event's type for a log line's level (as kopf's per-object logger posts them).
LOG_EVENT_TYPES = {logging.INFO: "Normal", logging.WARNING: "Warning", logging.ERROR: "Error"}
#: Posts an Event: (object, type, reason, message).
EventPoster = Callable[[Mapping[str, Any], str, str, str], None]

log = logging.getLogger("arctic_operator")


def cache_id(kind: str) -> str:
    """The id of the kopf index of ``kind`` (kopf hands each index to the handlers by its id)."""
    return f"cache_{kind}"


#: Requests one reconcile sends side by side (the Cluster's threads, shared by all reconciles).
FAN_OUT = 16
#: Kept connections to the API server: the fan-out threads, kopf's handler threads (at most 32)
#: and the control loop's; beyond it urllib3 opens (TLS handshake) and drops a connection per request.
CONNECTIONS = 64


#: kopf's own connections to the API server: its watches (one per watched kind, at most 7) and its
#: patches and Events. kopf's default session opens one per concurrent request, without a limit, and
#: keeps each idle connection with asyncio's 256 KiB TLS read buffer: after the first burst of 300
#: resources it held ~140 of them, 18 MB of buffers alone (tracemalloc). Beyond this many a request
#: waits for a free connection.
KOPF_CONNECTIONS = 24


async def login(**kwargs: Any) -> kopf.AiohttpSession | None:
    """kopf's login handler: the credentials ``kopf.login_via_client`` finds (the pod's
    service-account token in a cluster, $KUBECONFIG elsewhere, as the Kubernetes client does) in a
    session of at most ``KOPF_CONNECTIONS`` connections. None without credentials (kopf tries its
    other login handlers, then stops)."""
    import asyncio

    import aiohttp

    info = await asyncio.to_thread(kopf.login_via_client, **kwargs)
    if info is None:
        return None
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=KOPF_CONNECTIONS, ssl=info.as_ssl_context()),
        headers=info.as_http_headers(),
        proxy=info.proxy_url,
        trust_env=info.trust_env,
    )
    return kopf.AiohttpSession(
        server=info.server,
        default_namespace=info.default_namespace,
        priority=info.priority,
        expiration=info.expiration,
        aiohttp_session=session,
    )


def cluster_from_environment() -> Cluster:
    """In a pod: the service account; elsewhere: $KUBECONFIG (or ~/.kube/config)."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)  # type: ignore[no-untyped-call]
    configuration = client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = CONNECTIONS
    return Cluster(client.ApiClient(configuration), fan_out=FAN_OUT)


def register(
    registry: kopf.OperatorRegistry,
    op_settings: OperatorSettings,
    make_cluster: Callable[[], Cluster] = cluster_from_environment,
    control_tuning: ControlTuning | None = None,
) -> None:
    """Add the operator's handlers to ``registry``; ``make_cluster`` gives the API access (once);
    ``control_tuning`` overrides the control loop's windows and policy timings (tests)."""
    clusters: list[Cluster] = []
    tuning = control_tuning or ControlTuning(costs=op_settings.costs)
    # per resource uid: reconcile and the autoscaler's replica patch never interleave
    locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
    # children known to be as planned (reconcile.apply_children): no dry run until they change
    settled: Settled = {}

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
        # kopf's per-object worker keeps the last event (the whole object) while it waits for the
        # next one, 5 s by default: with the children and pods watched, thousands of objects had
        # events in a burst (1,000 resources: peak RSS 161.6 MB with 5 s, 155.7 MB with 0.5 s, one
        # run each, bench/results/operator-scale-20261204T172302Z.json and T173001Z)
        settings.queueing.idle_timeout = 0.5

    kinds = (*CHILD_KINDS, NETWORK_POLICY_KIND) if op_settings.network_policy else CHILD_KINDS

    # per resource uid: the workload's ready replicas as its status last reported them (``refresh``)
    reported: dict[str, int] = {}

    def one_pass(body: Mapping[str, Any], cache: IndexCache) -> Outcome:
        """One reconcile pass under the resource's lock, counted in the metrics."""
        uid = str(body.get("metadata", {}).get("uid"))
        started = time.monotonic()
        with RECONCILE_SECONDS.time(), locks[uid]:
            first = first_pass(settled, uid)
            try:
                outcome = reconcile(body, cluster(), op_settings, dt.datetime.now(dt.UTC), settled, cache)
            except Exception:
                RECONCILES.labels(result="error").inc()
                raise
            finally:
                if first:
                    FIRST_RECONCILE_SECONDS.observe(time.monotonic() - started)
            reported[uid] = int(outcome.status.get("readyReplicas") or 0)
        invalid = any(reason == "InvalidSpec" for _, reason, _ in outcome.events)
        RECONCILES.labels(result="invalid_spec" if invalid else "ok").inc()
        for action in ("created", "updated", "deleted"):
            APPLIED.labels(action=action).inc(sum(a.endswith(action) for a in outcome.applied))
        return outcome

    def cache_of(kwargs: Mapping[str, Any]) -> IndexCache:
        return IndexCache({k: kwargs[cache_id(k)] for _, k in kinds})

    def run(body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, **kwargs: Any) -> None:
        outcome = one_pass(body, cache_of(kwargs))  # an error: kopf retries with backoff and logs it
        # only what changed: an unchanged status (every resync of a settled resource) is no request;
        # kopf sends it as a merge patch, nulls included (they remove keys gone from status.engine)
        patch.status.update(reconcile_status_patch(body.get("status"), outcome.status))
        for kind, reason, message in outcome.events:
            kopf.event(body, type=kind, reason=reason, message=message[:1024])
        changed = [a for a in outcome.applied if not a.endswith("unchanged")]
        if changed:
            logger.info("applied: %s", ", ".join(changed))

    def live_pass(
        name: str, namespace: str, uid: str, cache: IndexCache, post: EventPoster
    ) -> Outcome | None:
        """A pass over a resource read live (its spec and status as they are now), its status patched
        here and its events posted with ``post``: the workload-event pass (``refresh``) and the resync
        (``loops.resync_loop``). None when the resource is gone, replaced or being deleted."""
        api = cluster()
        resource = api.get(f"{GROUP}/{VERSION}", KIND, name, namespace)
        meta = (resource or {}).get("metadata") or {}
        if resource is None or meta.get("uid") != uid or meta.get("deletionTimestamp"):
            return None
        outcome = one_pass(resource, cache)
        status = reconcile_status_patch(resource.get("status"), outcome.status)
        if status:
            api.patch_status(f"{GROUP}/{VERSION}", KIND, name, namespace, status)
        for kind, reason, message in outcome.events:
            post(resource, kind, reason, message[:1024])
        return outcome

    # set at kopf's startup (``start``): kopf's posting settings and handler threads
    posting: list[kopf.OperatorSettings] = []

    def post_event(body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """Post an Event about ``body`` through the operator's own client, as kopf posts one (the
        loops run outside kopf's handlers, where ``kopf.event`` has no queue). A failure is logged."""
        settings = posting[0].posting if posting else kopf.OperatorSettings().posting
        now = dt.datetime.now(dt.UTC).isoformat()
        meta = body.get("metadata") or {}
        ref = {
            "apiVersion": body.get("apiVersion"),
            "kind": body.get("kind"),
            "name": meta.get("name"),
            "uid": meta.get("uid"),
            "namespace": meta.get("namespace"),
        }
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"namespace": meta.get("namespace"), "generateName": settings.event_name_prefix},
            "action": "Action?",
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "reportingComponent": settings.reporting_component,
            "reportingInstance": settings.reporting_instance,
            "source": {"component": settings.reporting_component},
            "involvedObject": {k: v for k, v in ref.items() if v},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "eventTime": now,
        }
        try:
            cluster().create(event)
        except Exception as exc:
            log.warning("could not post an event (%s %s: %s): %s", type_, reason, message, exc)

    def note(body: Mapping[str, Any], level: int, message: str) -> None:
        """A log line about ``body``, also posted as an Event (as kopf's per-object logger does at
        ``posting.level`` INFO: reason Logging)."""
        meta = body.get("metadata") or {}
        log.log(level, "%s/%s: %s", meta.get("namespace"), meta.get("name"), message)
        post_event(body, LOG_EVENT_TYPES.get(level, "Normal"), "Logging", message)

    def ref_of(entry: ServiceEntry) -> dict[str, Any]:
        """The fields of a resource an Event names (``post_event``)."""
        meta = {"name": entry.name, "namespace": entry.namespace, "uid": entry.uid}
        return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": meta}

    def resync(entry: ServiceEntry, cache: IndexCache) -> None:
        """A resync pass (``loops.resync_loop``): ``live_pass``, and the objects it changed logged."""
        outcome = live_pass(entry.name, entry.namespace, entry.uid, cache, post_event)
        changed = [a for a in (outcome.applied if outcome else []) if not a.endswith("unchanged")]
        if changed:
            note(ref_of(entry), logging.INFO, f"applied: {', '.join(changed)}")

    def post_soon(body: Mapping[str, Any]) -> Callable[[str, str, str], None]:
        """``post_event`` about ``body`` in a worker thread (the control pass does not wait for it)."""
        loop = asyncio.get_running_loop()

        def post(type_: str, reason: str, message: str) -> None:
            loop.run_in_executor(None, post_event, body, type_, reason, message)

        return post

    async def control(uid: str, latest: Callable[[], ServiceEntry | None], stopped: asyncio.Event) -> None:
        """One resource's control loop (``loops.ControlTasks``): a pass every ``scrape_seconds`` over
        its newest body until ``stopped``; its in-memory state lives here, so it goes with the
        resource (or when the spec turns the loop off) and comes back fresh after a restart."""
        controller = ServiceController(config=tuning.config)
        last_error = ""
        while not stopped.is_set():
            entry = latest()
            if entry is None or entry.body is None:
                return
            body = entry.body
            started = time.monotonic()
            try:
                await control_pass(
                    cluster(),
                    body,
                    controller,
                    tuning,
                    locks[uid],
                    time.time(),
                    post_soon(body),
                )
                last_error = ""
            except Exception as exc:  # log it, keep the loop alive: the next interval tries again
                error = f"{type(exc).__name__}: {exc}"
                if error != last_error:  # one log line (and Event) per new error, not per interval
                    log.exception("control loop failed")
                    await asyncio.to_thread(note, body, logging.ERROR, f"control loop failed: {error}")
                last_error = error
            with contextlib.suppress(TimeoutError):
                wait = max(0.0, op_settings.scrape_seconds - (time.monotonic() - started))
                await asyncio.wait_for(stopped.wait(), wait)

    async def turned_off(entry: ServiceEntry) -> None:
        """The spec turned the control loop off: its status fields go too (read live)."""
        try:
            body = await asyncio.to_thread(
                cluster().get, f"{GROUP}/{VERSION}", KIND, entry.name, entry.namespace
            )
            if body is not None and (body.get("metadata") or {}).get("uid") == entry.uid:
                await clear_status(cluster(), body)
        except Exception as exc:
            message = f"could not clear the control loop's status: {exc}"
            await asyncio.to_thread(note, ref_of(entry), logging.WARNING, message)

    tasks: list[asyncio.Task[None]] = []

    async def start(settings: kopf.OperatorSettings, **kwargs: Any) -> None:
        """kopf's startup: the resync loop and the control tasks, over kopf's index of the resources
        (empty now; kopf fills it as its watch lists them)."""
        posting.append(settings)
        index = kwargs[SERVICES_INDEX]
        cache = cache_of(kwargs)
        executor = settings.execution.executor

        async def resync_one(entry: ServiceEntry) -> None:
            await asyncio.get_running_loop().run_in_executor(executor, resync, entry, cache)

        control_tasks = ControlTasks(loop=control, turned_off=turned_off)
        tasks.append(asyncio.create_task(resync_loop(index, op_settings.resync_seconds, resync_one, FAN_OUT)))
        tasks.append(asyncio.create_task(control_tasks.run(index)))

    async def stop(**_: Any) -> None:
        """kopf's cleanup: the loops end (a control pass in flight is cancelled)."""
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        tasks.clear()

    def controller_of(body: Mapping[str, Any]) -> Mapping[str, Any]:
        refs = (body.get("metadata") or {}).get("ownerReferences") or []
        return next((r for r in refs if r.get("controller") and r.get("kind") == KIND), {})

    def ready_changed(body: kopf.Body, type: str | None, **_: Any) -> bool:
        """kopf's filter for ``refresh`` (it runs in kopf's event loop, on every workload event): a
        workload of a resource this process has reconciled (its first pass comes anyway) whose ready
        replicas are not those its status reports. Not for kopf's initial listing (None) or a delete."""
        uid = controller_of(body).get("uid")
        if type in (None, "DELETED") or not uid or uid not in reported:
            return False
        return reported[uid] != int((body.get("status") or {}).get("readyReplicas") or 0)

    def refresh(body: kopf.Body, logger: kopf.Logger, **kwargs: Any) -> None:
        """A workload's ready replicas changed (its pods became ready, or stopped being): a pass over
        its resource now, not at the next resync, so the resource is Ready when its pods are. The
        resource is read live (its spec and status as they are now); its status is patched here."""
        owner = controller_of(body)
        live_pass(
            str(owner.get("name")),
            str(body.get("metadata", {}).get("namespace")),
            str(owner.get("uid")),
            cache_of(kwargs),
            lambda obj, t, r, m: kopf.event(kopf.Body(cast(kopf.RawBody, obj)), type=t, reason=r, message=m),
        )

    def forget(body: kopf.Body, **_: Any) -> None:
        uid = str(body.get("metadata", {}).get("uid"))
        locks.pop(uid, None)
        reported.pop(uid, None)
        for key in [k for k in list(settled) if k[0] == uid]:
            settled.pop(key, None)

    # async: a few fields and two digests per event, in kopf's event loop (a sync function would wait
    # for one of kopf's handler threads, behind the reconciles, and the cache would lag)
    async def cached_child(body: kopf.Body, **_: Any) -> Any:
        return index_child(body)

    kopf.on.startup(registry=registry)(configure)
    for api_version, kind in kinds:
        group, _, version = api_version.rpartition("/")
        kopf.index(
            group=group,
            version=version,
            plural=PLURALS[kind],
            id=cache_id(kind),
            labels=COMMON_LABELS,
            registry=registry,
        )(cached_child)
    for api_version, kind in (("apps/v1", "Deployment"), ("apps/v1", "StatefulSet")):
        group, _, version = api_version.rpartition("/")
        kopf.on.event(
            group=group,
            version=version,
            plural=PLURALS[kind],
            id=f"refresh-{kind.lower()}",
            labels=COMMON_LABELS,
            when=ready_changed,
            registry=registry,
        )(refresh)

    async def service_entry(body: kopf.Body, **_: Any) -> Any:
        return index_service(body)

    kopf.index(GROUP, VERSION, PLURAL, id=SERVICES_INDEX, registry=registry)(service_entry)
    kopf.on.startup(registry=registry)(start)
    kopf.on.cleanup(registry=registry)(stop)
    # not optional: the finalizer stays on each resource, as when the resync timer and the control
    # daemon (which kopf gives one) were kopf's
    kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry, id="forget")(forget)
    for decorator in (
        kopf.on.create(GROUP, VERSION, PLURAL, registry=registry, id="reconcile-create"),
        kopf.on.update(GROUP, VERSION, PLURAL, registry=registry, id="reconcile-update", field="spec"),
        kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry, id="reconcile-resume"),
    ):
        decorator(run)
