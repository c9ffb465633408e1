"""The ArcticInferenceService API (serving.arctic-serve.dev/v1alpha1) as typed models.

These pydantic models are the one source of truth for the custom resource: ``crd.py`` generates
the CRD's openAPIV3Schema from them (field docstrings become ``kubectl explain`` text, defaults
and bounds become schema defaults and bounds), and the operator parses every object it reads
with them. Cross-field rules (exactly one model source, tensor x ulysses = GPUs per pod, ...) are
not here but in ``validation.py``, which renders each rule both as a CEL expression for the CRD
and as a Python check, with the same message.

Conventions:

* JSON names are camelCase (``gpusPerPod``); Python names are snake_case. Both are accepted on
  input; ``dump`` writes camelCase.
* An optional field that is absent is ``None`` here and absent in JSON (never ``null``): the API
  server prunes nulls of non-nullable fields, so "absent" is the only way to say "not set".
* A section whose fields all have defaults (``parallelism``, ``speculation``, ...) defaults to
  ``{}`` in the CRD; the API server then fills in the nested defaults, exactly as pydantic does
  here (a test checks that both give the same object).
* Lists and maps that may be absent default to ``None`` rather than ``[]``/``{}`` so that the
  model dumps back to what the API server stores, byte for byte.

Neither torch nor vLLM is imported: this module ships in the operator image.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel

from arctic_runtime.contract import MAX_CAP

GROUP = "serving.arctic-serve.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ArcticInferenceService"
LIST_KIND = f"{KIND}List"
PLURAL = "arcticinferenceservices"
SINGULAR = "arcticinferenceservice"
SHORT_NAMES = ("ais",)
CATEGORIES = ("arctic",)
CRD_NAME = f"{PLURAL}.{GROUP}"

#: The extended resource the operator requests for ``spec.gpusPerPod``.
GPU_RESOURCE = "nvidia.com/gpu"
#: The longest resource name: child objects (Service, StatefulSet, PodMonitor, ...) are named after
#: it, a Service name must be a DNS-1035 label of at most 63 characters, and a StatefulSet's pods
#: carry a ``controller-revision-hash`` label of ``<name>-<10 characters>``, itself at most 63.
MAX_NAME_LENGTH = 52
#: vLLM flags the operator derives from the spec; ``spec.extraArgs`` must not repeat them (vLLM's
#: parser keeps the last value, so a repeat would silently override the spec while the status
#: still reports the spec's value). vLLM also accepts each with underscores.
MANAGED_ENGINE_FLAGS = (
    "--model",
    "--served-model-name",
    "--revision",
    "--download-dir",
    "--host",
    "--port",
    "--tensor-parallel-size",
    "-tp",
    "--ulysses-sequence-parallel-size",
    "--enable-shift-parallel",
    "--shift-parallel-threshold",
    "--speculative-config",
)

DNS1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
HUB_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$"
MODEL_URI = r"^(s3|gs|https)://[^\s]+$"
# Relative, no leading "/", no segment starting with "." (so no ".." and no hidden folders).
RELATIVE_PATH = r"^[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*$"
ABSOLUTE_PATH = r"^(/[A-Za-z0-9_][A-Za-z0-9._-]*)+$"
NO_WHITESPACE = r"^\S+$"
ENV_NAME = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
PROMETHEUS_DURATION = r"^([0-9]+(ms|s|m|h))+$"
CONDITION_REASON = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
# Kubernetes' resource.Quantity, as controller-gen writes it for a ResourceList.
# Kubernetes' resource.Quantity, as controller-gen writes it for a ResourceList, without a sign:
# every quantity here (requests, limits, sizes) must be >= 0, which the API server checks on the
# children (a negative one would pass the CRD and fail every reconcile).
QUANTITY = (
    r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
    r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
#: A label or annotation key (and a resource name): [DNS-subdomain prefix "/"] name of <= 63
#: characters, alphanumeric at both ends (Kubernetes' IsQualifiedName). No backslashes: the same
#: text goes into CEL string literals.
QUALIFIED_NAME = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
#: A label value: empty, or <= 63 characters, alphanumeric at both ends (IsValidLabelValue).
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"
_QUANTITY_RE = re.compile(QUANTITY)


def _quantity(value: Any) -> int | str:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and _QUANTITY_RE.match(value):
        return value
    raise ValueError(f"must be a Kubernetes quantity >= 0 such as 8, 500m or 64Gi, got {value!r}")


#: A Kubernetes quantity (``8``, ``500m``, ``64Gi``): an integer or a string, as in a ResourceList.
Quantity = Annotated[
    int | str,
    PlainValidator(_quantity),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "minimum": 0,  # applies to integers only, as the pattern applies to strings only
            "pattern": QUANTITY,
            "x-kubernetes-int-or-string": True,
        }
    ),
]
#: An object passed through to a Kubernetes field unchanged (affinity, env valueFrom): the API server
#: keeps unknown fields in it and Kubernetes validates it where it lands (the pod template).
Passthrough = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]
ExtraArg = Annotated[str, StringConstraints(min_length=1, max_length=4096)]
#: A label value's length bound (its pattern is checked by a CEL rule on the map; the bound keeps
#: that rule's estimated cost inside the API server's budget).
LabelValue = Annotated[str, StringConstraints(max_length=63)]

SpeculationMethod = Literal["suffix", "arctic", "ngram", "none"]


def _list_map(*keys: str) -> dict[str, Any]:
    """Schema extras for a list keyed by ``keys`` (server-side apply merges items by key)."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)}


#: JSON names that plain camelCase would spell differently.
_JSON_NAMES = {"swift_kv": "swiftKV"}


def _json_name(name: str) -> str:
    return _JSON_NAMES.get(name) or to_camel(name)


class ApiModel(BaseModel):
    """Base of every API model: camelCase JSON names, field docstrings as descriptions, unknown
    fields rejected (the API server prunes them instead; kubectl's default strict field
    validation reports them, and so does ``validate()`` here)."""

    model_config = ConfigDict(
        alias_generator=_json_name,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        use_attribute_docstrings=True,
        extra="forbid",
    )

    def dump(self) -> dict[str, Any]:
        """The JSON object, camelCase, with absent (``None``) fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# --------------------------------------------------------------------------------------------
# spec.model
# --------------------------------------------------------------------------------------------


class PvcModelSource(ApiModel):
    """A model folder on an existing PersistentVolumeClaim, mounted read-only."""

    claim_name: str = Field(max_length=253, pattern=DNS1123_SUBDOMAIN)
    """Name of the PersistentVolumeClaim, in the resource's namespace. It must be mountable by every
    replica (ReadOnlyMany or ReadWriteMany, or ReadWriteOnce with all replicas on one node)."""
    path: str | None = Field(default=None, max_length=1024, pattern=RELATIVE_PATH)
    """Folder inside the claim that holds the model (config.json, tokenizer and weights), relative
    to the claim's root, without "..". Absent: the claim's root."""


class ModelSource(ApiModel):
    """Where the weights come from. Exactly one of hub, pvc, uri or imagePath."""

    hub: str | None = Field(default=None, max_length=200, pattern=HUB_ID)
    """A Hugging Face Hub repository id, owner/name (e.g. meta-llama/Llama-3.1-8B-Instruct),
    downloaded into the model cache (spec.modelCache) when a pod starts. Gated models need a token:
    put HF_TOKEN in spec.env, from a Secret."""
    pvc: PvcModelSource | None = None
    """A model folder already on a PersistentVolumeClaim: nothing is downloaded and the model cache is
    not used."""
    uri: str | None = Field(default=None, max_length=2048, pattern=MODEL_URI)
    """An object-store or web location of the model folder: s3://bucket/prefix, gs://bucket/prefix or
    https://host/path, copied into the model cache when a pod starts. Credentials come from spec.env
    (e.g. AWS_ACCESS_KEY_ID from a Secret) or the pod's workload identity."""
    image_path: str | None = Field(default=None, max_length=1024, pattern=ABSOLUTE_PATH)
    """An absolute folder inside the engine image (spec.runtime.image) that holds the model, for
    weights baked into a custom image (air-gapped clusters, the kind e2e suite): e.g.
    /models/SmolLM2-135M-Instruct. Nothing is downloaded and the model cache is not used. Keep it out
    of the folders the operator mounts (/models-cache, and /models with a pvc source)."""


class ModelSpec(ApiModel):
    """The model to serve."""

    source: ModelSource
    """Where the weights come from: exactly one of hub, pvc, uri or imagePath."""
    served_name: str | None = Field(default=None, max_length=256, pattern=NO_WHITESPACE)
    """The model name clients send in OpenAI requests (the "model" field) and that /v1/models lists
    (vLLM's --served-model-name). Absent: the resource's name."""
    revision: str | None = Field(default=None, max_length=256, pattern=NO_WHITESPACE)
    """Hub revision to download: a branch, tag or commit hash. Only with source.hub. Absent: the
    repository's default branch (pin a commit in production so a new upload cannot change what
    runs)."""


class DraftModelSpec(ApiModel):
    """An Arctic speculator: MLP or LSTM draft heads trained for the served model (e.g.
    Snowflake/Arctic-LSTM-Speculator-Llama-3.1-8B-Instruct); its config says which kind."""

    source: ModelSource
    """Where the speculator's weights come from: exactly one of hub, pvc or uri."""
    revision: str | None = Field(default=None, max_length=256, pattern=NO_WHITESPACE)
    """Hub revision of the speculator: a branch, tag or commit hash. Only with source.hub."""


# --------------------------------------------------------------------------------------------
# spec.runtime, spec.resources
# --------------------------------------------------------------------------------------------


class LocalObjectReference(ApiModel):
    """A reference to an object in the resource's namespace, by name."""

    name: str = Field(max_length=253, pattern=DNS1123_SUBDOMAIN)
    """Name of the object (here: a Secret of type kubernetes.io/dockerconfigjson)."""


class RuntimeSpec(ApiModel):
    """The engine container's image."""

    image: str | None = Field(default=None, max_length=1024, pattern=NO_WHITESPACE)
    """Container image with vLLM 0.26 and the arctic-serve runtime plugin. Absent: the image the
    operator was released with (the operator's runtime image setting; its CPU image when
    gpusPerPod is 0). Pin a digest in production."""
    pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    """When the kubelet pulls the image. IfNotPresent: runtime images are several GB and a node
    that already has the tag should not pull it again on every pod start."""
    pull_secrets: list[LocalObjectReference] | None = Field(
        default=None, max_length=16, json_schema_extra=_list_map("name")
    )
    """Secrets with registry credentials for a private image (the pod's imagePullSecrets)."""


class ResourcesSpec(ApiModel):
    """CPU, memory and other resources of the engine container, passed to the pod unchanged. GPUs
    are not set here but with spec.gpusPerPod."""

    requests: dict[str, Quantity] | None = Field(default=None, max_length=32)
    """Resources the scheduler reserves for the engine container, e.g. {cpu: "8", memory: 64Gi}.
    Absent: none besides the GPUs. Reserve enough memory to hold the weights while they load."""
    limits: dict[str, Quantity] | None = Field(default=None, max_length=32)
    """Maximum resources, e.g. {memory: 96Gi}. A memory limit below what loading the model needs
    gets the pod OOM-killed during startup."""


# --------------------------------------------------------------------------------------------
# spec.parallelism
# --------------------------------------------------------------------------------------------


class ShiftParallelSpec(ApiModel):
    """Shift parallelism (Arctic Inference): switch every step between Ulysses sequence parallelism
    combined with tensor parallelism (large batches: throughput) and full tensor parallelism over the
    same GPUs (small batches: latency), sharing one KV cache."""

    enabled: bool = False
    """Switch modes per step (vLLM --enable-shift-parallel). Needs parallelism.ulysses > 1. Off by
    default: it keeps a second copy of the weights, sharded over all the pod's GPUs, in GPU memory."""
    threshold: int = Field(default=512, ge=1, le=1_048_576)
    """Tokens. A step with at most this many scheduled tokens runs in full tensor parallelism, a
    larger one in Ulysses x tensor parallelism (--shift-parallel-threshold). 512 is Arctic Inference's
    default: decode-heavy steps stay below it, prefill-heavy steps go above."""


class ParallelismSpec(ApiModel):
    """How one engine spreads over the pod's GPUs. tensor x ulysses must equal spec.gpusPerPod."""

    tensor: int = Field(default=1, ge=1, le=16)
    """Tensor-parallel size: each layer's weights are split over this many GPUs
    (vLLM --tensor-parallel-size)."""
    ulysses: int = Field(default=1, ge=1, le=16)
    """Ulysses sequence-parallel size: each step's tokens are split over this many groups of tensor
    GPUs, attention heads exchanged by all-to-all (--ulysses-sequence-parallel-size). Pays off for
    long prompts; the model's attention heads must divide by tensor x ulysses."""
    shift_parallel: ShiftParallelSpec = Field(default_factory=ShiftParallelSpec)
    """Shift parallelism: full tensor parallelism for small steps, Ulysses x tensor for large ones."""


# --------------------------------------------------------------------------------------------
# spec.speculation
# --------------------------------------------------------------------------------------------


class SuffixSpec(ApiModel):
    """Suffix decoding settings (vLLM's suffix_decoding_* keys; arctic-serve's own suffix cache).
    Used when speculation.method is suffix."""

    max_tree_depth: int = Field(default=64, ge=2, le=4096)
    """Tokens. Depth of every suffix trie: the longest matched context plus the draft after it
    (suffix_decoding_max_tree_depth). Each appended token costs O(depth) time and nodes; 64 leaves
    room for a 48-token match and a 16-token draft, and longer contexts rarely change the
    prediction."""
    max_cached_requests: int = Field(default=1000, ge=0, le=10_000_000)
    """Responses kept in the global trie, oldest dropped first; 0 disables it
    (suffix_decoding_max_cached_requests). 1000 is the runtime's default: up to 100s of MB per
    engine in the worst case (all-distinct text), much less for the repetitive workloads suffix
    decoding targets."""
    max_spec_factor: float = Field(default=1.0, ge=0, le=1000)
    """Draft tokens per matched token: a match of m tokens drafts at most ceil(factor x m) tokens
    (suffix_decoding_max_spec_factor). 1.0 lets a draft be as long as the context supporting it."""
    min_token_prob: float = Field(default=0.1, ge=0, le=1)
    """Probability. Drafting stops at the first token whose estimated acceptance probability is
    below this (suffix_decoding_min_token_prob); below 10 % a drafted token is almost always
    wasted verify compute."""


class CapControllerSpec(ApiModel):
    """The operator's live control of each pod's caps: from the engine's metrics (running requests,
    acceptance, draft length) and the verify cost measured for the GPU and model shape, it sets the
    soft cap to the largest batch size at which drafting still pays, within [min, max], and the hard
    cap to the soft cap + 1, so that nobody drafts where it costs more than it gains (never above
    spec.speculation.hardCap, if set); with zero acceptance nobody drafts. Through the runtime's
    admin API, without a restart. docs/control.md explains the policy."""

    enabled: bool = False
    """Let the operator move the caps. Off: the caps stay as set in the spec."""
    min: int = Field(default=1, ge=0, le=MAX_CAP)
    """Lowest soft cap the controller sets (running requests that keep drafting). With 1, one
    request drafts while fewer than 2 run (the hard cap is the soft cap + 1) as long as drafting
    pays; when it does not pay at all, nobody drafts, and every 10 minutes a lone request drafts
    again to measure acceptance anew."""
    max: int = Field(default=64, ge=0, le=MAX_CAP)
    """Highest soft cap the controller sets. 64 is Arctic Inference's default disable_by_batch_size;
    above it, drafting rarely pays on current GPUs."""
    ttft_budget_percent: float = Field(default=1.0, ge=0, le=100)
    """Percent: drafting may add at most this to a new request's expected time to first token, by
    the cost model, over drafting off at the batch drafting off would leave (only the first requests
    of a batch draft, up to the break-even size; when not one fits, nobody drafts). 1: first tokens
    at most 1 % later on average than with drafting off, by the cost model; under a queue the p95
    moves more than the mean (in the simulator up to about twice the budget), so 1 keeps the p95
    within 2 % of drafting off. 0: drafting only where it delays no first token; 100: nearly always
    the break-even size (the most goodput, later first tokens)."""
    refine_costs: bool = True
    """Refine the cost file's verify costs (the chart's operator.costProfile) from the pods' own
    decode steps, which the runtime times by batch size and drafting (arctic_decode_step* series):
    where a batch size has 200 steps with drafts and 200 without, their measured cost replaces the
    file's (within one plain step of it); older steps fade with a 10-minute half-life. false: the
    file as shipped."""


class SpeculationSpec(ApiModel):
    """Speculative decoding: a cheap drafter proposes tokens, the model verifies several per step.
    Pays at small batch sizes; the soft and hard caps turn it off under load."""

    method: SpeculationMethod = "none"
    """suffix: model-free drafts from the request's own text and recent responses (arctic-serve's
    suffix cache; best for repetitive output such as code edits, agents, JSON); arctic: Arctic
    speculator heads (spec.speculation.draftModel); ngram: vLLM's prompt lookup; none: no
    speculation. Default none, vLLM's behaviour: speculation is opted into per workload."""
    num_speculative_tokens: int | None = Field(default=None, ge=1, le=256)
    """Most tokens drafted per request per step (vLLM num_speculative_tokens). With suffix it must be
    below suffix.maxTreeDepth. Absent: 16 for suffix (at most maxTreeDepth - 1), 3 for ngram, the
    speculator's own number of heads for arctic."""
    draft_model: DraftModelSpec | None = None
    """The Arctic speculator (MLP or LSTM heads) for method arctic; required then, not allowed
    otherwise."""
    suffix: SuffixSpec = Field(default_factory=SuffixSpec)
    """Suffix decoding settings, used when method is suffix."""
    soft_cap: int | None = Field(default=None, ge=0, le=MAX_CAP)
    """Running requests. With more than this many requests running, only the first soft cap of
    them (scheduler order) keep their drafts (Arctic Inference's disable_by_batch_size). 0: nobody
    drafts. Absent: no soft cap. The initial value when capController is enabled."""
    hard_cap: int | None = Field(default=None, ge=0, le=MAX_CAP)
    """Running requests. With this many or more running, nobody drafts (Arctic Inference's
    hard_disable_by_batch_size). Must be >= softCap. Absent: no hard cap."""
    drafts_in_prefill_steps: bool = True
    """Whether an engine step that carries prefill work (a prompt chunk, or a request it admits)
    also verifies the running requests' drafts. true: vLLM's behaviour. false: such steps drop every
    draft, so a new request's first token waits only for half a step lengthened by drafting instead
    of 1.5 (drafting costs time to first token a third as much, and the capController's TTFT budget
    lets more requests draft); the price is one step without drafts for the decoding requests each
    time a prefill runs, so fewer tokens per step when requests arrive often. Applied at engine
    start (a change restarts the pods)."""
    cap_controller: CapControllerSpec = Field(default_factory=CapControllerSpec)
    """Live tuning of the soft cap by the operator, within bounds."""


class SwiftKVSpec(ApiModel):
    """SwiftKV: prefill runs the later layers only for each request's last token, their KV cache
    filled from an earlier layer (about half the prefill compute; decode unchanged)."""

    enabled: bool = False
    """Serve with SwiftKV. Needs a SwiftKV checkpoint (config model_type llama_swiftkv with
    num_key_value_layers, e.g. Snowflake/Llama-3.1-SwiftKV-8B-Instruct); the engine refuses to start
    on any other model, naming this setting."""


# --------------------------------------------------------------------------------------------
# spec.autoscaling
# --------------------------------------------------------------------------------------------


class AutoscalingTargets(ApiModel):
    """Per-replica targets: the replica count is the largest ceil(observed total / target) over the
    targets set. At least one."""

    waiting_requests_per_replica: float | None = Field(default=None, gt=0, le=100_000)
    """Requests waiting in the engine's queue per replica (vllm:num_requests_waiting). A queue means
    requests wait for a batch slot: scale before it grows."""
    running_requests_per_replica: float | None = Field(default=None, gt=0, le=100_000)
    """Requests in the running batch per replica (vllm:num_requests_running)."""
    kv_cache_usage: float | None = Field(default=None, gt=0, le=1)
    """Fraction of the KV cache in use, averaged over replicas (vllm:kv_cache_usage_perc). Near 1
    the engine preempts requests."""

    @model_validator(mode="after")
    def _at_least_one(self) -> AutoscalingTargets:
        if all(getattr(self, name) is None for name in type(self).model_fields):
            raise ValueError(
                "must set at least one of waitingRequestsPerReplica, runningRequestsPerReplica, kvCacheUsage"
            )
        return self


class ScaleUpPolicy(ApiModel):
    """How fast replicas are added."""

    stabilization_window_seconds: int = Field(default=60, ge=0, le=3600)
    """Seconds. Replicas are added only for load that lasted this long (the smallest recommendation
    of the window is used). 60: a queue spike shorter than a minute drains before a new replica
    could load its model anyway."""


class ScaleDownPolicy(ApiModel):
    """How fast replicas are removed."""

    stabilization_window_seconds: int = Field(default=300, ge=0, le=3600)
    """Seconds. Replicas are removed only when the load stayed low this long (the largest
    recommendation of the window is used). 300, Kubernetes HPA's default: a replica takes minutes to
    load its model, so dropping it on a short lull costs more than it saves."""


class BurstSpec(ApiModel):
    """Levers for traffic bursts, which come faster than a replica starts (minutes: pod start,
    weights, torch.compile and CUDA graphs; see docs/control.md). Both off by default."""

    queue_growth_lead_seconds: int = Field(default=0, ge=0, le=3600)
    """Seconds. While the requests in the engines (running + waiting) grow, the load is projected
    this far ahead at the growth rate (least squares over the metrics window) and a scale-up for it
    happens at once, without the scale-up window. About a replica's time-to-serve is right. 0: off,
    scale on the level only."""
    headroom_replicas: int = Field(default=0, ge=0, le=100)
    """Replicas kept beyond what the load needs (within maxReplicas), so that a burst lands on
    spare capacity while new replicas start. Costs their GPU time. 0: none."""


def _default_targets() -> AutoscalingTargets:
    return AutoscalingTargets(waiting_requests_per_replica=5, kv_cache_usage=0.8)


class AutoscalingSpec(ApiModel):
    """The operator's own autoscaler from engine metrics. Not with spec.replicas. For HPA or KEDA
    instead, leave this out, set spec.replicas and point them at the scale subresource."""

    min_replicas: int = Field(default=1, ge=1, le=1000)
    """Fewest replicas. At least 1: nothing holds requests while a replica loads its model, so there
    is no scale to zero."""
    max_replicas: int = Field(ge=1, le=1000)
    """Most replicas; the GPU budget of this service."""
    targets: AutoscalingTargets = Field(
        default_factory=_default_targets, json_schema_extra={"minProperties": 1}
    )
    """What one replica should carry. Default: 5 waiting requests (vLLM production-stack's KEDA
    trigger) and 80 % KV cache usage (above it the engine starts preempting)."""
    scale_up: ScaleUpPolicy = Field(default_factory=ScaleUpPolicy)
    """Scale-up stabilization."""
    scale_down: ScaleDownPolicy = Field(default_factory=ScaleDownPolicy)
    """Scale-down stabilization."""
    burst: BurstSpec = Field(default_factory=BurstSpec)
    """Scale-up on the load's growth rate and spare replicas for bursts (off by default)."""
    running_requests_as_undrafted: bool = True
    """Count each pod's running requests for ``targets.runningRequestsPerReplica`` as they would be without
    drafting: drafting finishes a request in fewer, longer steps, so fewer run at once for the same
    load, and a count of them alone would release replicas because drafting works. The pod's
    measured speedup (tokens per request-step from vLLM's generation and accepted-token counters,
    over the verify cost of its drafts at its batch from the cost curves) scales the count up,
    never down. So turning drafting on never removes a replica the same load would hold without
    it. false: the running requests as vLLM counts them."""


# --------------------------------------------------------------------------------------------
# spec.modelCache, spec.probes
# --------------------------------------------------------------------------------------------


class ModelCacheSpec(ApiModel):
    """Storage for models downloaded from the hub or a URI (not used for a pvc source)."""

    volume: Literal["emptyDir", "pvc"] = "emptyDir"
    """emptyDir: node-local scratch space, downloaded again whenever a pod starts (no storage to
    manage; fine for small models or a fast mirror). pvc: a PersistentVolumeClaim per replica, kept
    across pod restarts and rollouts, so each replica downloads once."""
    size: Quantity = "100Gi"
    """Size of the claim (pvc) or the emptyDir's size limit. 100Gi holds an 8B model in bf16
    (~16 GB) several times over or a 70B model in FP8 (~70 GB); a 70B model in bf16 needs ~150Gi."""
    storage_class_name: str | None = Field(default=None, max_length=253, pattern=DNS1123_SUBDOMAIN)
    """StorageClass of the claim (pvc only). Absent: the cluster's default class."""


class CompileCacheSpec(ApiModel):
    """vLLM's torch.compile and CUDA-graph caches (VLLM_CACHE_ROOT) on a volume that outlives the
    pod, so that a new replica on a node that served the model before skips compilation: on the
    H200, an 8B engine starts in ~55-75 s with warm caches against ~180 s cold."""

    volume: Literal["none", "hostPath", "pvc"] = "none"
    """none: caches live in the container and are lost with it; hostPath: a directory on the node
    (``path``), shared by the node's replicas; pvc: an existing claim (``claimName``), which must be
    ReadWriteMany to be shared by replicas on several nodes."""
    path: str = Field(default="/var/cache/arctic-serve/vllm", max_length=4096, pattern=r"^/")
    """The node's directory (hostPath only)."""
    claim_name: str | None = Field(default=None, max_length=253, pattern=DNS1123_SUBDOMAIN)
    """The claim (pvc only; required then)."""

    @model_validator(mode="after")
    def _claim_for_pvc(self) -> CompileCacheSpec:
        if self.volume == "pvc" and not self.claim_name:
            raise ValueError("claimName: required when volume is pvc")
        if self.volume != "pvc" and self.claim_name:
            raise ValueError("claimName: only with volume pvc")
        return self


class StartupProbeSpec(ApiModel):
    """The startup probe (GET /health): the engine has until periodSeconds x failureThreshold to
    download and load the model and warm up before the kubelet restarts it."""

    period_seconds: int = Field(default=10, ge=1, le=300)
    """Seconds between probes."""
    failure_threshold: int = Field(default=180, ge=1, le=10_000)
    """Failed probes before the container is restarted. 180 x 10 s = 30 minutes: a 70B download
    plus load and CUDA graph capture can take 15-20 minutes; raise it for slower storage. With
    Shift Parallelism the operator doubles it: the engine loads and warms up two models."""
    timeout_seconds: int = Field(default=5, ge=1, le=300)
    """Seconds one probe may take."""


class ReadinessProbeSpec(ApiModel):
    """The readiness probe (GET /health): a replica that fails it gets no new requests."""

    period_seconds: int = Field(default=5, ge=1, le=300)
    """Seconds between probes. 5: a recovered replica rejoins quickly."""
    failure_threshold: int = Field(default=3, ge=1, le=10_000)
    """Failed probes before the replica is taken out of the Service's endpoints."""
    timeout_seconds: int = Field(default=5, ge=1, le=300)
    """Seconds one probe may take. A busy engine answers /health in milliseconds; 5 s tolerates a
    long CPU-bound step."""


class LivenessProbeSpec(ApiModel):
    """The liveness probe (GET /health, which fails when the engine core has died): a replica that
    fails it is restarted."""

    period_seconds: int = Field(default=10, ge=1, le=300)
    """Seconds between probes."""
    failure_threshold: int = Field(default=6, ge=1, le=10_000)
    """Failed probes before the container is restarted. 6 x 10 s = 1 minute: long enough not to
    restart an engine that is only slow under load."""
    timeout_seconds: int = Field(default=10, ge=1, le=300)
    """Seconds one probe may take."""


class ProbesSpec(ApiModel):
    """Probe timing of the engine container, tuned for slow model loads."""

    startup: StartupProbeSpec = Field(default_factory=StartupProbeSpec)
    """Startup probe: how long loading the model may take."""
    readiness: ReadinessProbeSpec = Field(default_factory=ReadinessProbeSpec)
    """Readiness probe: when a replica gets traffic."""
    liveness: LivenessProbeSpec = Field(default_factory=LivenessProbeSpec)
    """Liveness probe: when a running replica is restarted."""


# --------------------------------------------------------------------------------------------
# spec.scheduling, spec.env, spec.service, spec.monitoring
# --------------------------------------------------------------------------------------------


class Toleration(ApiModel):
    """A pod toleration (core/v1 Toleration)."""

    key: str | None = Field(default=None, max_length=317, pattern=QUALIFIED_NAME)
    """Taint key to tolerate (a label key); absent with operator Exists: every taint."""
    operator: Literal["Exists", "Equal"] | None = None
    """Exists (any value) or Equal (value must match). Absent: Equal."""
    value: str | None = Field(default=None, max_length=63, pattern=LABEL_VALUE)
    """Taint value (a label value), for operator Equal; empty or absent with Exists."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to tolerate; absent: all effects."""
    toleration_seconds: int | None = Field(default=None)
    """Seconds a NoExecute taint is tolerated before eviction (only with effect NoExecute);
    absent: forever."""


class SchedulingSpec(ApiModel):
    """Where the pods may run, passed to the pod template."""

    node_selector: dict[str, LabelValue] | None = Field(default=None, max_length=64)
    """Node labels a node must have, e.g. {nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3}."""
    tolerations: list[Toleration] | None = Field(default=None, max_length=64)
    """Taints the pods tolerate, e.g. nvidia.com/gpu:NoSchedule on GPU nodes."""
    affinity: Passthrough | None = None
    """Pod affinity rules (core/v1 Affinity: nodeAffinity, podAffinity, podAntiAffinity), passed
    through unchanged and validated by Kubernetes on the pod template."""
    priority_class_name: str | None = Field(default=None, max_length=253, pattern=DNS1123_SUBDOMAIN)
    """PriorityClass of the pods: lets serving pods preempt batch jobs for GPUs."""


class EnvVar(ApiModel):
    """An environment variable of the engine container (core/v1 EnvVar)."""

    name: str = Field(min_length=1, max_length=256, pattern=ENV_NAME)
    """Variable name. The operator sets ARCTIC_SERVE_ENABLED, VLLM_PLUGINS,
    ARCTIC_SERVE_ADMIN_TOKEN_FILE and ARCTIC_SERVE_ADMIN_PORT itself; values given here for them
    are replaced."""
    value: str | None = Field(default=None, max_length=32_768)
    """Literal value."""
    value_from: Passthrough | None = None
    """Value from a Secret, ConfigMap or the pod (core/v1 EnvVarSource: secretKeyRef, configMapKeyRef,
    fieldRef, resourceFieldRef), passed through unchanged."""


class ServiceSpec(ApiModel):
    """The Service in front of the replicas (OpenAI-compatible HTTP API)."""

    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    """Service type. ClusterIP: reachable inside the cluster (put a Gateway or Ingress in front)."""
    port: int = Field(default=8000, ge=1, le=65535)
    """Port of the Service and of the engine's HTTP server. 8000 is vLLM's default. The runtime's
    admin API listens on a port of its own, 8001 (8002 when this port is 8001), which the Service
    does not publish."""
    annotations: dict[str, str] | None = Field(default=None, max_length=64)
    """Annotations of the Service, e.g. for a cloud load balancer."""


class MonitorToggle(ApiModel):
    """Whether the operator creates this Prometheus Operator object."""

    enabled: bool = False
    """Create it. Needs the Prometheus Operator's CRDs in the cluster. Off by default: the CRDs may be
    absent."""


class MonitoringSpec(ApiModel):
    """Prometheus scraping of the engines' /metrics (vllm:* and arctic_* series)."""

    service_monitor: MonitorToggle = Field(default_factory=MonitorToggle)
    """A ServiceMonitor selecting the Service (scrapes ready replicas through the Service's
    endpoints)."""
    pod_monitor: MonitorToggle = Field(default_factory=MonitorToggle)
    """A PodMonitor selecting the pods (also scrapes replicas that are not ready, e.g. while they
    load). Not together with serviceMonitor."""
    interval: str = Field(default="15s", max_length=32, pattern=PROMETHEUS_DURATION)
    """Scrape interval, a Prometheus duration (15s, 1m). 15s gives at least four samples per
    autoscaling window."""
    labels: dict[str, LabelValue] | None = Field(default=None, max_length=64)
    """Extra labels on the ServiceMonitor/PodMonitor, so your Prometheus selects them (for
    kube-prometheus-stack: release: <its release name>)."""


# --------------------------------------------------------------------------------------------
# spec
# --------------------------------------------------------------------------------------------


class ArcticInferenceServiceSpec(ApiModel):
    """What to serve and how: the model, the engine's parallelism and speculation, replicas or
    autoscaling, and the pods' storage, probes and scheduling."""

    model: ModelSpec
    """The model to serve and where its weights come from."""
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec)
    """The engine container's image."""
    gpus_per_pod: int = Field(default=1, ge=0, le=16)
    """GPUs per replica (nvidia.com/gpu), all used by one engine: parallelism.tensor x
    parallelism.ulysses must equal it. 0: a CPU pod (vLLM's CPU build; tensor and ulysses 1)."""
    resources: ResourcesSpec | None = None
    """CPU, memory and other resources of the engine container (requests and limits passed to the
    pod). Not GPUs: those come from gpusPerPod."""
    parallelism: ParallelismSpec = Field(default_factory=ParallelismSpec)
    """Tensor and Ulysses parallel sizes and shift parallelism."""
    speculation: SpeculationSpec = Field(default_factory=SpeculationSpec)
    """Speculative decoding: the method and the batch-size caps that turn it off under load."""
    swift_kv: SwiftKVSpec = Field(default_factory=SwiftKVSpec)
    """SwiftKV prefill (needs a SwiftKV checkpoint)."""
    replicas: int | None = Field(default=None, ge=0, le=1000, json_schema_extra={"format": "int32"})
    """Fixed number of replicas; the scale subresource's field, so kubectl scale, an HPA or KEDA can
    set it. Not with autoscaling. Absent (and no autoscaling): 1."""
    autoscaling: AutoscalingSpec | None = None
    """The operator's own autoscaler, from the engines' metrics. Not with replicas."""
    model_cache: ModelCacheSpec = Field(default_factory=ModelCacheSpec)
    """Where downloaded models are kept."""
    compile_cache: CompileCacheSpec = Field(default_factory=CompileCacheSpec)
    """Where vLLM keeps its compile and CUDA-graph caches (cuts a new replica's start)."""
    probes: ProbesSpec = Field(default_factory=ProbesSpec)
    """Startup, readiness and liveness probe timing."""
    scheduling: SchedulingSpec | None = None
    """Node selection, tolerations, affinity and priority of the pods."""
    env: list[EnvVar] | None = Field(default=None, max_length=128, json_schema_extra=_list_map("name"))
    """Extra environment variables of the engine container (e.g. HF_TOKEN from a Secret,
    VLLM_* settings)."""
    extra_args: list[ExtraArg] | None = Field(default=None, max_length=64)
    """Extra vLLM command-line arguments, appended as given (escape hatch: e.g. --max-model-len,
    --max-num-seqs, --gpu-memory-utilization, --quantization). Flags the spec already sets (--model,
    --tensor-parallel-size, --speculative-config, ...) are not allowed."""
    service: ServiceSpec = Field(default_factory=ServiceSpec)
    """The Service in front of the replicas."""
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec)
    """Prometheus ServiceMonitor or PodMonitor for the engines' metrics."""


# --------------------------------------------------------------------------------------------
# status
# --------------------------------------------------------------------------------------------

ConditionType = Literal["Ready", "Progressing", "Degraded"]


class Condition(ApiModel):
    """One aspect of the resource's state (the shape of metav1.Condition)."""

    type: ConditionType
    """Ready: the Service has at least the desired number of ready replicas. Progressing: a rollout
    or scaling is under way. Degraded: the spec cannot be served as written (invalid spec, failing
    pods); the message says what to fix."""
    status: Literal["True", "False", "Unknown"]
    """Whether the condition holds."""
    reason: str = Field(min_length=1, max_length=1024, pattern=CONDITION_REASON)
    """Machine-readable cause in CamelCase, e.g. InvalidSpec, ModelLoading, ReplicasReady."""
    message: str = Field(default="", max_length=32_768)
    """Human-readable details: for Degraded, the field and what is allowed."""
    last_transition_time: datetime
    """When status last changed (RFC 3339)."""
    observed_generation: int | None = Field(default=None, ge=0)
    """metadata.generation the condition was computed from."""


class EngineStatus(ApiModel):
    """Engine settings in effect, as the engines report them (they may differ from the spec while a
    change rolls out, and the soft cap moves when the cap controller is enabled)."""

    speculation_method: SpeculationMethod | None = None
    """Speculation method the engines run."""
    num_speculative_tokens: int | None = Field(default=None, ge=0)
    """Most draft tokens per request per step."""
    soft_cap: int | None = Field(default=None, ge=0)
    """Current soft cap; absent: none."""
    hard_cap: int | None = Field(default=None, ge=0)
    """Current hard cap; absent: none."""
    swift_kv: bool | None = None
    """Whether SwiftKV is on."""


#: Most entries kept in status.autoscaling.lastDecisions and status.capController.lastChanges.
MAX_STATUS_HISTORY = 20
#: Most pods listed in status.pods (spec.autoscaling.maxReplicas is at most 1000).
MAX_STATUS_PODS = 1000


class ReplicaDecisionRecord(ApiModel):
    """One decision of the operator's autoscaler that changed the replica count or why it held."""

    time: datetime
    """When it was decided (RFC 3339)."""
    current: int = Field(ge=0, json_schema_extra={"format": "int32"})
    """The workload's replicas before the decision."""
    desired: int = Field(ge=0, json_schema_extra={"format": "int32"})
    """The replicas it chose (equal to current: no change)."""
    reason: str = Field(min_length=1, max_length=128, pattern=CONDITION_REASON)
    """CamelCase: ScaleUp, ScaleDown, WithinTolerance, Stabilizing, Cooldown, PodsLoading,
    MetricsIncomplete, NoMetrics, AtMinimum, AtMaximum."""
    message: str = Field(default="", max_length=1024)
    """The decision in one sentence, with the numbers it was made from."""


class AutoscalingStatus(ApiModel):
    """What the operator's autoscaler (spec.autoscaling) sees and decided. The replica count lives
    in the workload's spec.replicas, never in this resource's spec."""

    desired_replicas: int | None = Field(default=None, ge=0, json_schema_extra={"format": "int32"})
    """Replicas the autoscaler wants now."""
    current_replicas: int | None = Field(default=None, ge=0, json_schema_extra={"format": "int32"})
    """The workload's spec.replicas when the latest decision was made."""
    reason: str | None = Field(default=None, max_length=128, pattern=CONDITION_REASON)
    """Reason of the latest decision (CamelCase). Holding reasons: WithinTolerance (load near the
    targets), Stabilizing (waiting for the scale-up or scale-down window), Cooldown (a recent
    change), PodsLoading (no scale-down while pods load the model), MetricsIncomplete or NoMetrics
    (some ready pods' metrics could not be read: no scale-down)."""
    message: str | None = Field(default=None, max_length=1024)
    """The latest decision in one sentence, with its numbers."""
    metrics_complete: bool | None = None
    """Whether every ready pod's metrics were read (false: see status.pods[].metricsError; the
    autoscaler never removes a replica then)."""
    ready_pods: int | None = Field(default=None, ge=0, json_schema_extra={"format": "int32"})
    """Ready engine pods."""
    observed_pods: int | None = Field(default=None, ge=0, json_schema_extra={"format": "int32"})
    """Ready pods whose metrics were read (a fresh, complete window)."""
    loading_pods: int | None = Field(default=None, ge=0, json_schema_extra={"format": "int32"})
    """Pods that exist but are not ready yet (starting or loading the model)."""
    waiting_requests: float | None = Field(default=None, ge=0)
    """Requests waiting for a batch slot, summed over the observed pods (mean over the metrics
    window)."""
    running_requests: float | None = Field(default=None, ge=0)
    """Requests in the running batches, summed over the observed pods (mean over the window)."""
    kv_cache_usage: float | None = Field(default=None, ge=0)
    """KV cache usage (0..1), averaged over the observed pods that report it."""
    last_scale_time: datetime | None = None
    """When the autoscaler last changed the replica count (RFC 3339)."""
    last_decisions: list[ReplicaDecisionRecord] | None = Field(default=None, max_length=MAX_STATUS_HISTORY)
    """The latest decisions, oldest first: every change, and every change of the reason it held
    for."""


class CapChangeRecord(ApiModel):
    """One change of a pod's speculation cap by the operator's cap controller."""

    time: datetime
    """When it was decided (RFC 3339)."""
    pod: str = Field(max_length=253)
    """The pod whose cap changed."""
    soft_cap: int | None = Field(default=None, ge=0, le=MAX_CAP)
    """The new soft cap; absent: none."""
    hard_cap: int | None = Field(default=None, ge=0, le=MAX_CAP)
    """The new hard cap; absent: none."""
    previous_soft_cap: int | None = Field(default=None, ge=0, le=MAX_CAP)
    """The soft cap the controller had set before; absent: none yet."""
    previous_hard_cap: int | None = Field(default=None, ge=0, le=MAX_CAP)
    """The hard cap the controller had set before; absent: none yet."""
    reason: str = Field(min_length=1, max_length=128, pattern=CONDITION_REASON)
    """CamelCase: Initial, Raised, Lowered, NotPaying, Probe, OutOfBounds, ..."""
    message: str = Field(default="", max_length=1024)
    """The decision in one sentence, with the running/waiting requests and acceptance it used."""
    result: str = Field(default="", max_length=1024)
    """Ok when the pod's admin API took the cap, else the error (the controller retries every
    interval)."""


class RefinementPoint(ApiModel):
    """One batch size at which the pods' decode steps with and without drafts were compared."""

    batch: float = Field(ge=0)
    """Mean decoding requests of the steps with drafts."""
    change: float
    """The verify cost measured (a step with drafts over one without, as if every request drafted)
    less the cost file's."""


class CostRefinementStatus(ApiModel):
    """The cost file's verify costs as refined from the pods' own decode steps (docs/control.md)."""

    steps: int = Field(ge=0)
    """Decode steps behind the changes (older steps count less: a 10-minute half-life)."""
    verify_cost: list[RefinementPoint] | None = Field(default=None, max_length=16)
    """By batch size; between them the change is interpolated, outside them the nearest holds."""


class CapControllerStatus(ApiModel):
    """What the operator's cap controller (spec.speculation.capController) changed."""

    last_changes: list[CapChangeRecord] | None = Field(default=None, max_length=MAX_STATUS_HISTORY)
    """The latest cap changes over all pods, oldest first."""
    cost_refinement: CostRefinementStatus | None = None
    """How the cost file is refined from the pods' decode steps (capController.refineCosts);
    absent while no batch size has enough steps, or with refineCosts false."""


class PodControlStatus(ApiModel):
    """One engine pod as the operator's control loop sees it."""

    name: str = Field(max_length=253)
    """The pod's name."""
    ready: bool = False
    """Whether the pod passes its readiness probe (only ready pods are scraped)."""
    metrics: Literal["Ok", "Error", "Incomplete", "NotReady"] = "NotReady"
    """Ok: its /metrics were read this interval. Error: they could not be read (metricsError says
    why). Incomplete: read, but without a quantity the policies need. NotReady: not scraped."""
    metrics_error: str | None = Field(default=None, max_length=1024)
    """Why the metrics could not be used (timeout, connection refused, HTTP status, parse error)."""
    running: float | None = Field(default=None, ge=0)
    """Mean running requests over the metrics window."""
    waiting: float | None = Field(default=None, ge=0)
    """Mean waiting requests over the metrics window."""
    kv_cache_usage: float | None = Field(default=None, ge=0)
    """Mean KV cache usage (0..1) over the window, if reported."""
    acceptance_rate: float | None = Field(default=None, ge=0)
    """Accepted / drafted tokens over the window; absent when nothing was drafted."""
    configured_soft_cap: int | None = Field(default=None, ge=0, le=MAX_CAP)
    """The soft cap the cap controller set for this pod; absent: none set yet (the spec's)."""
    configured_hard_cap: int | None = Field(default=None, ge=0, le=MAX_CAP)
    """The hard cap the cap controller set for this pod; absent: none set yet (the spec's)."""
    effective_soft_cap: int | None = Field(default=None, ge=0, le=MAX_CAP)
    """The soft cap the engine reports (arctic_speculation_soft_cap, or its answer to the last
    change); absent: no cap, or not reported. Differs from configuredSoftCap while a change is on
    its way or after the pod restarted (the controller sets it again)."""
    effective_hard_cap: int | None = Field(default=None, ge=0, le=MAX_CAP)
    """The hard cap the engine reports; absent: no cap, or not reported."""
    cap_reason: str | None = Field(default=None, max_length=128, pattern=CONDITION_REASON)
    """Reason of the cap controller's latest decision for this pod (CamelCase; e.g. Dwell or
    WithinHysteresis when it held)."""
    cap_message: str | None = Field(default=None, max_length=1024)
    """The cap controller's latest decision for this pod, in one sentence."""
    cap_error: str | None = Field(default=None, max_length=1024)
    """Why the last attempt to set this pod's cap failed (wrong token, admin API off, timeout)."""


class ArcticInferenceServiceStatus(ApiModel):
    """Observed state, written by the operator (status subresource)."""

    observed_generation: int | None = Field(default=None, ge=0)
    """metadata.generation of the spec the status describes. Lower than metadata.generation: the
    operator has not yet acted on the latest change."""
    conditions: list[Condition] | None = Field(
        default=None, max_length=8, json_schema_extra=_list_map("type")
    )
    """Ready, Progressing and Degraded, one each."""
    replicas: int = Field(default=0, ge=0, json_schema_extra={"format": "int32"})
    """Replicas (pods) that exist; the scale subresource's status."""
    ready_replicas: int = Field(default=0, ge=0, json_schema_extra={"format": "int32"})
    """Replicas that pass their readiness probe."""
    updated_replicas: int = Field(default=0, ge=0, json_schema_extra={"format": "int32"})
    """Replicas running the current spec."""
    selector: str | None = Field(default=None, max_length=4096)
    """Label selector of the pods, in string form; the scale subresource's selector (HPA, KEDA)."""
    endpoint: str | None = Field(default=None, max_length=2048)
    """URL of the OpenAI-compatible API inside the cluster, e.g. http://NAME.NAMESPACE.svc:8000/v1."""
    engine: EngineStatus | None = None
    """Engine settings in effect."""
    autoscaling: AutoscalingStatus | None = None
    """The operator's autoscaler: what it sees, its latest decision and why (spec.autoscaling)."""
    cap_controller: CapControllerStatus | None = None
    """The operator's cap controller: its latest changes (spec.speculation.capController)."""
    pods: list[PodControlStatus] | None = Field(
        default=None, max_length=MAX_STATUS_PODS, json_schema_extra=_list_map("name")
    )
    """Engine pods as the control loop sees them: metrics, load, acceptance, and the speculation
    cap configured by the operator versus in effect on the engine. Present while spec.autoscaling
    or spec.speculation.capController is on."""


# --------------------------------------------------------------------------------------------
# the resource
# --------------------------------------------------------------------------------------------


class ObjectMeta(ApiModel):
    """Standard object metadata. Only the name is constrained here; other fields are kept as
    given."""

    model_config = ConfigDict(extra="allow")

    name: str | None = Field(default=None, max_length=MAX_NAME_LENGTH, pattern=DNS1035_LABEL)
    """Resource name: a DNS-1035 label (lower case letters, digits and "-", starting with a letter)
    of at most 52 characters, because the operator names the Service and the pods after it."""


class ArcticInferenceService(ApiModel):
    """ArcticInferenceService serves an LLM with vLLM and the arctic-serve runtime plugin
    (speculative decoding with live batch-size caps, shift parallelism, SwiftKV) behind an
    OpenAI-compatible Service, with fixed replicas or metric-driven autoscaling."""

    api_version: Literal["serving.arctic-serve.dev/v1alpha1"] = "serving.arctic-serve.dev/v1alpha1"
    """APIVersion of the object: serving.arctic-serve.dev/v1alpha1."""
    kind: Literal["ArcticInferenceService"] = "ArcticInferenceService"
    """Kind of the object: ArcticInferenceService."""
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    """Standard object metadata."""
    spec: ArcticInferenceServiceSpec
    """Desired state: the model and where it comes from, the engine's parallelism and speculation,
    replicas or autoscaling, and the pods' storage, probes and scheduling."""
    status: ArcticInferenceServiceStatus | None = None
    """Observed state, written by the operator (status subresource): conditions, replica counts,
    the endpoint and the engine settings in effect."""
