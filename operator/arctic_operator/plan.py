"""Pure planning: an ArcticInferenceService spec -> every Kubernetes object it needs.

``plan(resource, inputs)`` takes the parsed custom resource and what the operator observed (which
optional CRDs the cluster serves, the replica count the autoscaler chose, the admin token) and
returns a ``Plan``: the desired objects, complete and in apply order, plus warnings for the status.
Nothing here does I/O; the kopf layer applies the plan.

What gets created, all named after the resource, labelled with ``app.kubernetes.io/instance=<name>``
and owned by it (``ownerReferences``, controller), so deleting the resource deletes them:

* ``Secret <name>-admin``: the bearer token of the runtime's admin API (``/arctic/v1/speculation``),
  mounted read-only into the engine at ``ADMIN_TOKEN_PATH``. Create-only: the operator never
  rotates a token that exists (the cap controller reads it too).
* the engines: a ``Deployment`` when the model cache is an ``emptyDir``; a ``StatefulSet`` with a
  ``volumeClaimTemplate`` when it is a PVC (one claim per replica, kept across restarts, so a
  replica downloads its model once).
* ``Service <name>``: ClusterIP (or the type asked for) on the engine port, named ``http``. The
  runtime's admin API listens on a port of its own (named ``admin``, ``admin_port()``), which the
  Service does not publish: only pod-to-pod traffic (the operator's control loop) reaches it.
* ``NetworkPolicy <name>`` when the operator was given an ``admin_peer`` (the chart's
  ``networkPolicy.enabled``): the serving port open to all, the admin port only to the operator.
* ``PodDisruptionBudget <name>`` (maxUnavailable 1) when more than one replica may run.
* ``ServiceMonitor`` or ``PodMonitor`` when asked for and the cluster serves the CRD (Prometheus
  operator); otherwise a warning says why none was made.

The engine command is vLLM's OpenAI server with our plugin enabled: ``--speculative-config`` carries
vLLM's own keys (method, draft length, suffix keys) and ``--additional-config`` carries the plugin's
section, built from the runtime/operator contract (``arctic_runtime.contract.EngineSettings``): the
speculation caps and the Ulysses / Shift Parallelism layout (vLLM's ``--tensor-parallel-size`` is
the tensor size, the plugin widens the engine to tensor x ulysses ranks). Features the runtime does
not ship yet (Arctic speculator heads, https model URIs) raise ``PlanError`` naming the
field, which the operator reports as a Degraded condition instead of starting pods that would crash.

Rollouts: GPU replicas update one at a time without a surge pod (``maxSurge 0, maxUnavailable 1``):
GPU nodes are usually full, and a surge pod would stay Pending and stall the rollout. CPU replicas
surge first (``maxSurge 1, maxUnavailable 0``), so a single CPU replica has no downtime.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from arctic_operator.api import (
    API_VERSION,
    GPU_RESOURCE,
    KIND,
    ArcticInferenceService,
    ArcticInferenceServiceSpec,
)
from arctic_runtime import contract

MANAGED_BY = "arctic-serve-operator"
ENGINE_CONTAINER = "engine"
ENGINE_PORT_NAME = "http"
ADMIN_PORT_NAME = contract.ADMIN_PORT_NAME
DEFAULT_IMAGE = "ghcr.io/arctic-serve/runtime:0.1.0"
DEFAULT_CPU_IMAGE = "ghcr.io/arctic-serve/runtime-cpu:0.1.0"
#: Where the engine finds its admin token (the Secret ``<name>-admin``, key ``token``).
ADMIN_TOKEN_PATH = "/var/run/arctic-serve/admin/token"
MODEL_CACHE_PATH = "/models-cache"
#: The runtime images' non-root user and group (images/runtime*/Dockerfile: UID/GID 10001).
RUNTIME_UID = 10001
PVC_MODEL_PATH = "/models"
COMPILE_CACHE_PATH = "/var/cache/vllm"
"""VLLM_CACHE_ROOT when spec.compileCache is on: torch.compile artifacts and CUDA-graph caches."""
#: Environment the operator sets on the engine; a user ``env`` entry of the same name is replaced.
MANAGED_ENV = (
    contract.ENV_ENABLED,
    "VLLM_PLUGINS",
    contract.ENV_ADMIN_TOKEN_FILE,
    contract.ENV_ADMIN_TOKEN,
    contract.ENV_ADMIN_PORT,
    "HF_HOME",
)


class PlanError(ValueError):
    """The spec asks for something the runtime cannot do (yet); ``field`` is its JSON path."""

    def __init__(self, field_path: str, message: str) -> None:
        super().__init__(f"{field_path}: {message}")
        self.field = field_path
        self.message = message


@dataclass(frozen=True)
class PlanInputs:
    """What the operator observed, besides the resource itself."""

    admin_token: str
    """The admin API token: the existing Secret's, or a new random one (the caller makes it)."""
    service_monitor_crd: bool = False
    """Whether the cluster serves monitoring.coreos.com/v1 ServiceMonitor."""
    pod_monitor_crd: bool = False
    """Whether the cluster serves monitoring.coreos.com/v1 PodMonitor."""
    current_replicas: int | None = None
    """The replicas the engines' workload has now (the autoscaler's last choice)."""
    default_image: str = DEFAULT_IMAGE
    """The runtime image when the spec names none and the pod has GPUs (the operator's release)."""
    default_cpu_image: str = DEFAULT_CPU_IMAGE
    """The same for CPU pods (``gpusPerPod: 0``): vLLM's CPU build."""
    admin_peer: dict[str, Any] | None = None
    """A NetworkPolicyPeer selecting the operator's pods: with it, a NetworkPolicy admits only the
    operator to the engines' admin port. None: no NetworkPolicy."""


@dataclass
class Plan:
    objects: list[dict[str, Any]] = field(default_factory=list)
    """Desired objects, in apply order (Secret first, so pods can mount it)."""
    warnings: list[str] = field(default_factory=list)
    """Things the user asked for that were not made, and why (for status and events)."""
    replicas: int = 1
    """The replicas the workload gets."""
    selector: dict[str, str] = field(default_factory=dict)
    """The engines' pod labels (the scale subresource's selector)."""

    def by_kind(self, kind: str) -> dict[str, Any]:
        """The one planned object of ``kind`` (KeyError if none)."""
        for obj in self.objects:
            if obj["kind"] == kind:
                return obj
        raise KeyError(kind)


def labels(name: str) -> dict[str, str]:
    """The labels every child object carries; the pod selector is the same set."""
    return {
        "app.kubernetes.io/name": "arctic-serve",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": "engine",
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def selector_string(selector: dict[str, str]) -> str:
    """A label selector in string form (``status.selector``, for HPA and KEDA)."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


def _meta(resource: ArcticInferenceService, name: str) -> dict[str, Any]:
    owner = resource.metadata.name or ""
    uid = getattr(resource.metadata, "uid", None) or ""
    return {
        "name": name,
        "namespace": getattr(resource.metadata, "namespace", None),
        "labels": labels(owner),
        "ownerReferences": [
            {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": owner,
                "uid": uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }


def unsupported(spec: ArcticInferenceServiceSpec) -> PlanError | None:
    """The first spec feature this runtime release cannot serve, as a PlanError (None if none)."""
    if spec.speculation.method == "arctic":
        return PlanError(
            "spec.speculation.method",
            "the arctic speculator (MLP/LSTM draft heads) is not in this runtime release yet; "
            "use suffix, ngram or none",
        )
    uri = spec.model.source.uri
    if uri is not None and uri.startswith("https://"):
        return PlanError(
            "spec.model.source.uri",
            "https:// model sources are not supported yet; use hub, pvc, s3:// or gs://",
        )
    return None


def speculative_config(spec: ArcticInferenceServiceSpec) -> dict[str, Any] | None:
    """vLLM's ``--speculative-config`` for the spec (vLLM's keys only), or None."""
    s = spec.speculation
    suffix = contract.SuffixKeys(
        max_tree_depth=s.suffix.max_tree_depth,
        max_cached_requests=s.suffix.max_cached_requests,
        max_spec_factor=s.suffix.max_spec_factor,
        min_token_prob=s.suffix.min_token_prob,
    )
    return contract.speculative_config(s.method, s.num_speculative_tokens, suffix)


def engine_settings(spec: ArcticInferenceServiceSpec) -> contract.EngineSettings:
    """The plugin's engine settings (``--additional-config``'s ``arctic`` section) for the spec."""
    p = spec.parallelism
    return contract.EngineSettings(
        speculation=contract.SpeculationCap(
            soft_cap=spec.speculation.soft_cap, hard_cap=spec.speculation.hard_cap
        ),
        parallel=contract.ParallelSettings(
            ulysses=p.ulysses,
            shift=p.shift_parallel.enabled,
            shift_threshold=p.shift_parallel.threshold,
        ),
        swiftkv=spec.swift_kv.enabled,
        drafts_in_prefill_steps=spec.speculation.drafts_in_prefill_steps,
    )


def model_location(spec: ArcticInferenceServiceSpec) -> tuple[str, list[str]]:
    """vLLM's ``--model`` value and the flags that go with the source."""
    source = spec.model.source
    if source.hub is not None:
        return source.hub, (["--revision", spec.model.revision] if spec.model.revision else [])
    if source.pvc is not None:
        path = f"{PVC_MODEL_PATH}/{source.pvc.path}" if source.pvc.path else PVC_MODEL_PATH
        return path, []
    if source.image_path is not None:
        return source.image_path, []
    assert source.uri is not None  # exactly one source: checked by the CRD and validate()
    return source.uri, ["--load-format", "runai_streamer"]


def engine_args(resource: ArcticInferenceService) -> list[str]:
    """The engine container's arguments (after ``python3 -m vllm.entrypoints.openai.api_server``)."""
    spec = resource.spec
    model, model_flags = model_location(spec)
    args = [
        "--model",
        model,
        *model_flags,
        "--served-model-name",
        spec.model.served_name or resource.metadata.name or "model",
        "--download-dir",
        MODEL_CACHE_PATH,
        "--host",
        "0.0.0.0",
        "--port",
        str(spec.service.port),
    ]
    if spec.parallelism.tensor > 1:
        args += ["--tensor-parallel-size", str(spec.parallelism.tensor)]
    spec_config = speculative_config(spec)
    if spec_config is not None:
        args += ["--speculative-config", _json(spec_config)]
    section = engine_settings(spec).section()
    if section:
        args += ["--additional-config", _json({contract.ADDITIONAL_CONFIG_KEY: section})]
    return [*args, *(spec.extra_args or [])]


def _json(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def admin_port(spec: ArcticInferenceServiceSpec) -> int:
    """The engine's admin port: ``contract.ARCTIC_ADMIN_PORT`` (8001), or the next port when the
    serving port is 8001 (the two must differ)."""
    default = contract.ARCTIC_ADMIN_PORT
    return default if spec.service.port != default else default + 1


def _env(spec: ArcticInferenceServiceSpec) -> list[dict[str, Any]]:
    managed = [
        {"name": contract.ENV_ENABLED, "value": "1"},
        {"name": "VLLM_PLUGINS", "value": contract.vllm_plugins_value()},
        {"name": contract.ENV_ADMIN_TOKEN_FILE, "value": ADMIN_TOKEN_PATH},
        {"name": contract.ENV_ADMIN_PORT, "value": str(admin_port(spec))},
        {"name": "HF_HOME", "value": f"{MODEL_CACHE_PATH}/hf"},
    ]
    user = [
        e.model_dump(by_alias=True, exclude_none=True) for e in spec.env or [] if e.name not in MANAGED_ENV
    ]
    return user + managed


def startup_failure_threshold(spec: ArcticInferenceServiceSpec) -> int:
    """The startup probe's failure threshold: as written, doubled with Shift Parallelism (the
    engine loads, profiles and warms up a second model sharded over all the pod's GPUs)."""
    threshold = spec.probes.startup.failure_threshold
    return threshold * 2 if spec.parallelism.shift_parallel.enabled else threshold


def _probe(path: str, period: int, failures: int, timeout: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": ENGINE_PORT_NAME},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": timeout,
    }


def pod_template(resource: ArcticInferenceService, inputs: PlanInputs) -> dict[str, Any]:
    spec = resource.spec
    name = resource.metadata.name or ""
    resources: dict[str, Any] = {}
    if spec.resources is not None:
        resources = spec.resources.model_dump(by_alias=True, exclude_none=True)
    if spec.gpus_per_pod > 0:
        resources.setdefault("limits", {})[GPU_RESOURCE] = str(spec.gpus_per_pod)  # a quantity
    probes = spec.probes
    container: dict[str, Any] = {
        "name": ENGINE_CONTAINER,
        "image": spec.runtime.image
        or (inputs.default_image if spec.gpus_per_pod > 0 else inputs.default_cpu_image),
        "imagePullPolicy": spec.runtime.pull_policy,
        "command": ["python3", "-m", "vllm.entrypoints.openai.api_server"],
        "args": engine_args(resource),
        "env": _env(spec),
        "ports": [
            {"name": ENGINE_PORT_NAME, "containerPort": spec.service.port, "protocol": "TCP"},
            # the admin API: reached pod-to-pod by the operator, never published by the Service
            {"name": ADMIN_PORT_NAME, "containerPort": admin_port(spec), "protocol": "TCP"},
        ],
        "startupProbe": _probe(
            "/health",
            probes.startup.period_seconds,
            startup_failure_threshold(spec),
            probes.startup.timeout_seconds,
        ),
        "readinessProbe": _probe(
            "/health",
            probes.readiness.period_seconds,
            probes.readiness.failure_threshold,
            probes.readiness.timeout_seconds,
        ),
        "livenessProbe": _probe(
            "/health",
            probes.liveness.period_seconds,
            probes.liveness.failure_threshold,
            probes.liveness.timeout_seconds,
        ),
        "resources": resources,
        # Pod Security "restricted": no privilege escalation, no capabilities, non-root, the runtime's
        # default seccomp profile. The root filesystem stays writable: vLLM, torch and triton write
        # their compile caches under $HOME and /tmp.
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": "model-cache", "mountPath": MODEL_CACHE_PATH},
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "admin-token", "mountPath": ADMIN_TOKEN_PATH.rsplit("/", 1)[0], "readOnly": True},
        ],
    }
    volumes: list[dict[str, Any]] = [
        # vLLM's workers exchange tensors through shared memory; the container default (64 MiB) is too small.
        {"name": "dshm", "emptyDir": {"medium": "Memory"}},
        {"name": "admin-token", "secret": {"secretName": f"{name}-admin", "defaultMode": 0o440}},
    ]
    if spec.model_cache.volume == "emptyDir":
        volumes.append({"name": "model-cache", "emptyDir": {"sizeLimit": spec.model_cache.size}})
    compile_cache = spec.compile_cache
    if compile_cache.volume != "none":
        if compile_cache.volume == "hostPath":
            source: dict[str, Any] = {"hostPath": {"path": compile_cache.path, "type": "DirectoryOrCreate"}}
        else:
            source = {"persistentVolumeClaim": {"claimName": compile_cache.claim_name}}
        volumes.append({"name": "compile-cache", **source})
        container["volumeMounts"].append({"name": "compile-cache", "mountPath": COMPILE_CACHE_PATH})
        container["env"].append({"name": "VLLM_CACHE_ROOT", "value": COMPILE_CACHE_PATH})
    pvc = spec.model.source.pvc
    if pvc is not None:
        volumes.append(
            {"name": "model", "persistentVolumeClaim": {"claimName": pvc.claim_name, "readOnly": True}}
        )
        container["volumeMounts"].append({"name": "model", "mountPath": PVC_MODEL_PATH, "readOnly": True})
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "volumes": volumes,
        "enableServiceLinks": False,
        # The engine never calls the Kubernetes API: no service-account token in the pod.
        "automountServiceAccountToken": False,
        # fsGroup: the admin-token Secret (mode 0440) and a fresh model-cache volume belong to the
        # engine's group, so the non-root engine can read the token and write the cache.
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUNTIME_UID,
            "runAsGroup": RUNTIME_UID,
            "fsGroup": RUNTIME_UID,
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        # vLLM drains in-flight requests on SIGTERM; give long generations time to finish.
        "terminationGracePeriodSeconds": 120,
    }
    if spec.runtime.pull_secrets:
        pod_spec["imagePullSecrets"] = [s.model_dump(by_alias=True) for s in spec.runtime.pull_secrets]
    sched = spec.scheduling
    if sched is not None:
        if sched.node_selector:
            pod_spec["nodeSelector"] = dict(sched.node_selector)
        if sched.tolerations:
            pod_spec["tolerations"] = [
                t.model_dump(by_alias=True, exclude_none=True) for t in sched.tolerations
            ]
        if sched.affinity is not None:
            pod_spec["affinity"] = sched.affinity
        if sched.priority_class_name:
            pod_spec["priorityClassName"] = sched.priority_class_name
    return {"metadata": {"labels": labels(name)}, "spec": pod_spec}


def desired_replicas(spec: ArcticInferenceServiceSpec, current: int | None) -> int:
    """Fixed replicas as written (absent: 1); with autoscaling, the current count kept inside
    [minReplicas, maxReplicas] (the autoscaler moves it; a new workload starts at the minimum)."""
    if spec.autoscaling is None:
        return 1 if spec.replicas is None else spec.replicas
    low, high = spec.autoscaling.min_replicas, spec.autoscaling.max_replicas
    return low if current is None else max(low, min(high, current))


def plan_reads_replicas(spec: ArcticInferenceServiceSpec) -> bool:
    """Whether the plan depends on the workload's current replicas (``desired_replicas``): only
    with autoscaling. Otherwise the workload need not be read before planning."""
    return spec.autoscaling is not None


def workload_kind(spec: ArcticInferenceServiceSpec) -> str:
    """StatefulSet when the model cache is a PVC (one claim per replica), else Deployment."""
    return "StatefulSet" if spec.model_cache.volume == "pvc" else "Deployment"


def workload(resource: ArcticInferenceService, inputs: PlanInputs, replicas: int) -> dict[str, Any]:
    spec = resource.spec
    name = resource.metadata.name or ""
    body: dict[str, Any] = {
        "replicas": replicas,
        "selector": {"matchLabels": labels(name)},
        "template": pod_template(resource, inputs),
    }
    if workload_kind(spec) == "StatefulSet":
        claim: dict[str, Any] = {
            "metadata": {"name": "model-cache", "labels": labels(name)},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": spec.model_cache.size}},
            },
        }
        if spec.model_cache.storage_class_name:
            claim["spec"]["storageClassName"] = spec.model_cache.storage_class_name
        body.update(
            serviceName=name,
            podManagementPolicy="Parallel",
            updateStrategy={"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            volumeClaimTemplates=[claim],
            # claims outlive scale-down (the model stays cached) and go with the resource
            persistentVolumeClaimRetentionPolicy={"whenDeleted": "Delete", "whenScaled": "Retain"},
        )
        return {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": _meta(resource, name),
            "spec": body,
        }
    surge = (
        {"maxSurge": 0, "maxUnavailable": 1}
        if spec.gpus_per_pod > 0
        else {"maxSurge": 1, "maxUnavailable": 0}
    )
    body["strategy"] = {"type": "RollingUpdate", "rollingUpdate": surge}
    body["progressDeadlineSeconds"] = max(
        600, spec.probes.startup.period_seconds * startup_failure_threshold(spec) + 120
    )
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(resource, name), "spec": body}


def plan(resource: ArcticInferenceService, inputs: PlanInputs) -> Plan:
    """Every object ``resource`` needs (see the module docstring); PlanError for unsupported specs."""
    spec = resource.spec
    name = resource.metadata.name or ""
    error = unsupported(spec)
    if error is not None:
        raise error
    out = Plan(replicas=desired_replicas(spec, inputs.current_replicas), selector=labels(name))
    secret_meta = _meta(resource, f"{name}-admin")
    secret_meta["annotations"] = {"serving.arctic-serve.dev/create-only": "true"}
    out.objects.append(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": secret_meta,
            "type": "Opaque",
            "stringData": {"token": inputs.admin_token},
        }
    )
    out.objects.append(workload(resource, inputs, out.replicas))
    service_meta = _meta(resource, name)
    if spec.service.annotations:
        service_meta["annotations"] = dict(spec.service.annotations)
    out.objects.append(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": service_meta,
            "spec": {
                "type": spec.service.type,
                "selector": labels(name),
                "ports": [
                    {
                        "name": ENGINE_PORT_NAME,
                        "port": spec.service.port,
                        "targetPort": ENGINE_PORT_NAME,
                        # part of the ports' merge key in server-side apply: always spelled out
                        "protocol": "TCP",
                    }
                ],
            },
        }
    )
    may_run_several = out.replicas > 1 or (spec.autoscaling is not None and spec.autoscaling.max_replicas > 1)
    if may_run_several:
        out.objects.append(
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": _meta(resource, name),
                "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels(name)}},
            }
        )
    if inputs.admin_peer is not None:
        out.objects.append(network_policy(resource, inputs.admin_peer))
    out.objects += _monitors(resource, inputs, out.warnings)
    return out


def network_policy(resource: ArcticInferenceService, admin_peer: dict[str, Any]) -> dict[str, Any]:
    """Ingress to the engines: the serving port from anywhere (clients, Prometheus), the admin port
    only from ``admin_peer`` (the operator). Anything else is denied once a CNI enforces it."""
    name = resource.metadata.name or ""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(resource, name),
        "spec": {
            "podSelector": {"matchLabels": labels(name)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"ports": [{"port": ENGINE_PORT_NAME, "protocol": "TCP"}]},
                {"ports": [{"port": ADMIN_PORT_NAME, "protocol": "TCP"}], "from": [admin_peer]},
            ],
        },
    }


def _monitors(
    resource: ArcticInferenceService, inputs: PlanInputs, warnings: list[str]
) -> list[dict[str, Any]]:
    monitoring = resource.spec.monitoring
    name = resource.metadata.name or ""
    endpoint = {"port": ENGINE_PORT_NAME, "path": "/metrics", "interval": monitoring.interval}
    meta = _meta(resource, name)
    if monitoring.labels:
        meta["labels"] = {**meta["labels"], **monitoring.labels}
    selector = {"matchLabels": labels(name)}
    if monitoring.service_monitor.enabled:
        if not inputs.service_monitor_crd:
            warnings.append(
                "spec.monitoring.serviceMonitor: the cluster has no ServiceMonitor CRD "
                "(monitoring.coreos.com/v1); none was created"
            )
            return []
        return [
            {
                "apiVersion": "monitoring.coreos.com/v1",
                "kind": "ServiceMonitor",
                "metadata": meta,
                "spec": {"selector": selector, "endpoints": [endpoint]},
            }
        ]
    if monitoring.pod_monitor.enabled:
        if not inputs.pod_monitor_crd:
            warnings.append(
                "spec.monitoring.podMonitor: the cluster has no PodMonitor CRD (monitoring.coreos.com/v1); "
                "none was created"
            )
            return []
        return [
            {
                "apiVersion": "monitoring.coreos.com/v1",
                "kind": "PodMonitor",
                "metadata": meta,
                "spec": {"selector": selector, "podMetricsEndpoints": [endpoint]},
            }
        ]
    return []
