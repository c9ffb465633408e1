"""The CRD's rules and ``validate()`` agree: every cross-field rule, evaluated as CEL from the
generated YAML (cel-python) and in Python, accepts the same objects and rejects the same ones
with the same message; structural errors are reported at the same field by jsonschema (against
the generated openAPIV3Schema) and by the pydantic models."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arctic_operator.api import API_VERSION, KIND
from arctic_operator.validation import RULES, FieldError, InvalidResource, parse, validate
from tests.operator.apiserver_rules import CelRules, admit, apply_defaults, schema_errors

DELETE = object()


def base() -> dict[str, Any]:
    """The smallest valid resource: one hub model on one GPU."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": "demo", "namespace": "default"},
        "spec": {"model": {"source": {"hub": "org/model"}}},
    }


def changed(changes: dict[str, Any]) -> dict[str, Any]:
    """``base()`` with ``{"spec.a.b": value}`` set (``DELETE`` removes), parents created."""
    obj = base()
    for path, value in changes.items():
        node = obj
        *parents, last = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        if value is DELETE:
            node.pop(last, None)
        else:
            node[last] = copy.deepcopy(value)
    return obj


def cel_messages(schema: dict[str, Any], cel: CelRules, obj: dict[str, Any]) -> list[str]:
    stored = apply_defaults(schema, obj)
    assert schema_errors(schema, stored) == [], "a rule case must be structurally valid"
    return cel.messages(schema, stored)


RULE_BY_NAME = {rule.name: rule for rule in RULES}

# (rule, changes to base(), what the Python side reports as found)
INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("model-source-exactly-one", {"spec.model.source.uri": "s3://bucket/m"}, "got hub and uri"),
    ("model-source-exactly-one", {"spec.model.source": {}}, "got none"),
    (
        "model-source-exactly-one",
        {"spec.model.source.imagePath": "/models/smollm2"},
        "got hub and imagePath",
    ),
    (
        "model-revision-needs-hub",
        {"spec.model.source": {"imagePath": "/models/smollm2"}, "spec.model.revision": "main"},
        "got source imagePath",
    ),
    (
        "model-revision-needs-hub",
        {"spec.model.source": {"pvc": {"claimName": "models"}}, "spec.model.revision": "main"},
        "got source pvc",
    ),
    (
        "replicas-xor-autoscaling",
        {"spec.replicas": 2, "spec.autoscaling": {"maxReplicas": 3}},
        "got replicas 2 and autoscaling",
    ),
    ("autoscaling-min-le-max", {"spec.autoscaling": {"minReplicas": 4, "maxReplicas": 2}}, "got 4 > 2"),
    (
        "parallel-size-equals-gpus",
        {"spec.gpusPerPod": 8, "spec.parallelism": {"tensor": 2, "ulysses": 2}},
        "got tensor 2 x ulysses 2 = 4, gpusPerPod 8",
    ),
    (
        "parallel-size-equals-gpus",
        {"spec.gpusPerPod": 0, "spec.parallelism": {"tensor": 2}},
        "got tensor 2 x ulysses 1 = 2, gpusPerPod 0",
    ),
    (
        "shift-parallel-needs-ulysses",
        {"spec.gpusPerPod": 4, "spec.parallelism": {"tensor": 4, "shiftParallel": {"enabled": True}}},
        "got ulysses 1",
    ),
    ("hard-cap-ge-soft-cap", {"spec.speculation": {"softCap": 4, "hardCap": 2}}, "got 2 < 4"),
    ("cap-controller-min-le-max", {"spec.speculation.capController": {"min": 65}}, "got 65 > 64"),
    ("draft-model-required-for-arctic", {"spec.speculation.method": "arctic"}, ""),
    (
        "draft-model-only-for-arctic",
        {"spec.speculation": {"method": "suffix", "draftModel": {"source": {"hub": "org/heads"}}}},
        "got method suffix",
    ),
    (
        "draft-model-source-exactly-one",
        {
            "spec.speculation": {
                "method": "arctic",
                "draftModel": {"source": {"hub": "org/heads", "uri": "gs://b/heads"}},
            }
        },
        "got hub and uri",
    ),
    (
        "draft-model-revision-needs-hub",
        {
            "spec.speculation": {
                "method": "arctic",
                "draftModel": {"source": {"uri": "gs://b/heads"}, "revision": "v1"},
            }
        },
        "got source uri",
    ),
    (
        "suffix-tokens-below-tree-depth",
        {
            "spec.speculation": {
                "method": "suffix",
                "numSpeculativeTokens": 16,
                "suffix": {"maxTreeDepth": 16},
            }
        },
        "got 16 >= 16",
    ),
    ("no-gpu-in-resources", {"spec.resources.limits": {"nvidia.com/gpu": 1}}, "got nvidia.com/gpu in limits"),
    (
        "no-gpu-in-resources",
        {"spec.resources": {"requests": {"nvidia.com/gpu": "2"}, "limits": {"nvidia.com/gpu": "2"}}},
        "got nvidia.com/gpu in requests and limits",
    ),
    (
        "extra-args-not-managed",
        {"spec.extraArgs": ["--max-num-seqs=64", "--tensor-parallel-size=2"]},
        "got --tensor-parallel-size=2",
    ),
    (
        "extra-args-not-managed",
        {"spec.extraArgs": ["--speculative_config", "{}"]},
        "got --speculative_config",
    ),
    ("extra-args-not-managed", {"spec.extraArgs": ["-tp", "2", "--port=9000"]}, "got -tp, --port=9000"),
    (
        "one-prometheus-monitor",
        {"spec.monitoring": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}}},
        "",
    ),
    # what the API server would reject on the children, caught on the resource instead
    (
        "node-selector-labels",
        {"spec.scheduling": {"nodeSelector": {"gpu type": "h100"}}},
        "got key 'gpu type'",
    ),
    (
        "tolerations-as-kubernetes-allows",
        {"spec.scheduling": {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "value": "x"}]}},
        "tolerations[0]: value 'x' with operator Exists",
    ),
    ("resource-names", {"spec.resources": {"requests": {"bad name!": "1"}}}, "got key 'bad name!'"),
    (
        "env-value-or-value-from",
        {"spec.env": [{"name": "A", "value": "x", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]},
        "got both for A",
    ),
    (
        "service-annotation-keys",
        {"spec.service": {"annotations": {"not valid!": "x"}}},
        "got key 'not valid!'",
    ),
    (
        "monitoring-labels",
        {"spec.monitoring": {"labels": {"release": "-bad-"}}},
        "got value '-bad-' for 'release'",
    ),
]

# Objects at the edge of each rule that both sides must accept.
VALID: list[tuple[str, dict[str, Any]]] = [
    ("hub with revision", {"spec.model.revision": "0e9e39f249a16976918f6564b8830bc894c89659"}),
    ("pvc source", {"spec.model.source": {"pvc": {"claimName": "models", "path": "llama/8b"}}}),
    ("uri source", {"spec.model.source": {"uri": "https://example.com/models/x/"}}),
    ("replicas only", {"spec.replicas": 0}),
    ("autoscaling only, min == max", {"spec.autoscaling": {"minReplicas": 3, "maxReplicas": 3}}),
    ("tensor x ulysses = gpus", {"spec.gpusPerPod": 8, "spec.parallelism": {"tensor": 2, "ulysses": 4}}),
    ("cpu pod", {"spec.gpusPerPod": 0}),
    (
        "shift with ulysses 2",
        {
            "spec.gpusPerPod": 4,
            "spec.parallelism": {"tensor": 2, "ulysses": 2, "shiftParallel": {"enabled": True}},
        },
    ),
    ("hard cap == soft cap", {"spec.speculation": {"softCap": 8, "hardCap": 8}}),
    ("zero caps", {"spec.speculation": {"softCap": 0, "hardCap": 0}}),
    ("only a hard cap", {"spec.speculation": {"hardCap": 3}}),
    ("controller min == max", {"spec.speculation.capController": {"enabled": True, "min": 64, "max": 64}}),
    (
        "arctic with draft model",
        {
            "spec.speculation": {
                "method": "arctic",
                "draftModel": {"source": {"hub": "org/heads"}, "revision": "main"},
            }
        },
    ),
    (
        "suffix tokens = depth - 1",
        {
            "spec.speculation": {
                "method": "suffix",
                "numSpeculativeTokens": 15,
                "suffix": {"maxTreeDepth": 16},
            }
        },
    ),
    (
        "tokens >= depth without suffix",
        {"spec.speculation": {"method": "ngram", "numSpeculativeTokens": 80, "suffix": {"maxTreeDepth": 16}}},
    ),
    ("cpu and memory resources", {"spec.resources": {"requests": {"cpu": "500m", "memory": "8Gi"}}}),
    ("unmanaged extra args", {"spec.extraArgs": ["--model-impl=transformers", "--max-num-seqs", "64"]}),
    ("one monitor", {"spec.monitoring": {"podMonitor": {"enabled": True}}}),
    (
        "kubernetes-style keys and tolerations",
        {
            "spec.scheduling": {
                "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "pool": ""},
                "tolerations": [
                    {"operator": "Exists"},
                    {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute", "tolerationSeconds": 30},
                ],
            },
            "spec.service": {
                "annotations": {"service.beta.kubernetes.io/aws-load-balancer-internal": "true"}
            },
        },
    ),
]


def test_every_rule_has_an_invalid_case() -> None:
    assert {name for name, _, _ in INVALID} == set(RULE_BY_NAME)


@pytest.mark.parametrize(("name", "changes", "detail"), INVALID, ids=[c[0] for c in INVALID])
def test_rule_rejects_in_cel_and_python_with_one_message(
    name: str, changes: dict[str, Any], detail: str, schema: dict[str, Any], cel: CelRules
) -> None:
    rule = RULE_BY_NAME[name]
    obj = changed(changes)
    assert cel_messages(schema, cel, obj) == [rule.cel_message]
    assert validate(obj) == [FieldError(rule.field, rule.message, detail)]


@pytest.mark.parametrize(("title", "changes"), VALID, ids=[c[0] for c in VALID])
def test_edge_cases_accepted_by_both(
    title: str, changes: dict[str, Any], crd: dict[str, Any], cel: CelRules
) -> None:
    obj = changed(changes)
    assert admit(crd, obj, cel) == []
    assert validate(obj) == []


def test_error_text_names_the_field_what_is_allowed_and_what_was_found() -> None:
    [error] = validate(changed({"spec.speculation": {"softCap": 4, "hardCap": 2}}))
    assert str(error) == "spec.speculation.hardCap: must be >= spec.speculation.softCap (got 2 < 4)"


def test_every_problem_is_reported_not_just_the_first(schema: dict[str, Any], cel: CelRules) -> None:
    obj = changed(
        {
            "spec.gpusPerPod": 2,
            "spec.speculation": {"method": "arctic", "softCap": 9, "hardCap": 1},
            "spec.replicas": 1,
            "spec.autoscaling": {"maxReplicas": 2},
        }
    )
    python = sorted(f"{e.field}: {e.message}" for e in validate(obj))
    assert python == cel_messages(schema, cel, obj)
    assert len(python) == 4


def test_parse_returns_the_defaulted_model_or_raises_with_every_error() -> None:
    resource = parse(base())
    assert resource.spec.parallelism.tensor == 1 and resource.spec.speculation.method == "none"
    with pytest.raises(InvalidResource) as info:
        parse(changed({"spec.speculation": {"softCap": 4, "hardCap": 2}, "spec.gpusPerPod": 3}))
    assert [e.field for e in info.value.errors] == ["spec.parallelism", "spec.speculation.hardCap"]
    assert "spec.speculation.hardCap: must be >= spec.speculation.softCap (got 2 < 4)" in str(info.value)


# --------------------------------------------------------------------------------------------
# Structural errors: jsonschema (the CRD) and pydantic (validate) name the same field
# --------------------------------------------------------------------------------------------

# (title, changes, field validate() names, path jsonschema reports, words of validate()'s message)
STRUCTURAL: list[tuple[str, dict[str, Any], str, str, str]] = [
    (
        "bound",
        {"spec.parallelism": {"tensor": 32}},
        "spec.parallelism.tensor",
        "spec.parallelism.tensor",
        "16",
    ),
    ("negative", {"spec.gpusPerPod": -1}, "spec.gpusPerPod", "spec.gpusPerPod", "greater than or equal to 0"),
    (
        "enum",
        {"spec.speculation.method": "eagle"},
        "spec.speculation.method",
        "spec.speculation.method",
        "'suffix'",
    ),
    ("required", {"spec.model": DELETE}, "spec.model", "spec", "is required"),
    (
        "pattern",
        {"spec.model.source.hub": "not a hub id"},
        "spec.model.source.hub",
        "spec.model.source.hub",
        "match",
    ),
    (
        "uri scheme",
        {"spec.model.source": {"uri": "ftp://x/y"}},
        "spec.model.source.uri",
        "spec.model.source.uri",
        "match",
    ),
    (
        "path escapes the claim",
        {"spec.model.source": {"pvc": {"claimName": "m", "path": "../etc"}}},
        "spec.model.source.pvc.path",
        "spec.model.source.pvc.path",
        "match",
    ),
    ("name pattern", {"metadata.name": "Bad_Name"}, "metadata.name", "metadata.name", "match"),
    ("name length", {"metadata.name": "a" * 53}, "metadata.name", "metadata.name", "at most 52"),
    (
        "probability",
        {"spec.speculation.suffix": {"minTokenProb": 1.5}},
        "spec.speculation.suffix.minTokenProb",
        "spec.speculation.suffix.minTokenProb",
        "1",
    ),
    (
        "exclusive minimum",
        {"spec.autoscaling": {"maxReplicas": 2, "targets": {"kvCacheUsage": 0}}},
        "spec.autoscaling.targets.kvCacheUsage",
        "spec.autoscaling.targets.kvCacheUsage",
        "greater than 0",
    ),
    (
        "no autoscaling target",
        {"spec.autoscaling": {"maxReplicas": 2, "targets": {}}},
        "spec.autoscaling.targets",
        "spec.autoscaling.targets",
        "at least one",
    ),
    (
        "quantity",
        {"spec.resources.requests": {"cpu": "two"}},
        "spec.resources.requests.cpu",
        "spec.resources.requests.cpu",
        "quantity",
    ),
    ("type", {"spec.replicas": "3"}, "spec.replicas", "spec.replicas", "integer"),
    ("env name required", {"spec.env": [{"value": "x"}]}, "spec.env[0].name", "spec.env[0]", "is required"),
    ("empty extra arg", {"spec.extraArgs": [""]}, "spec.extraArgs[0]", "spec.extraArgs[0]", "at least 1"),
    ("unknown field", {"spec.replica": 3}, "spec.replica", "spec", "not a field"),
    (
        "condition type",
        {
            "status": {
                "conditions": [
                    {
                        "type": "Available",
                        "status": "True",
                        "reason": "Ok",
                        "lastTransitionTime": "2026-01-01T00:00:00Z",
                    }
                ]
            }
        },
        "status.conditions[0].type",
        "status.conditions[0].type",
        "'Ready'",
    ),
]


@pytest.mark.parametrize(
    ("title", "changes", "field", "schema_path", "words"), STRUCTURAL, ids=[c[0] for c in STRUCTURAL]
)
def test_structural_errors_agree(
    title: str, changes: dict[str, Any], field: str, schema_path: str, words: str, schema: dict[str, Any]
) -> None:
    obj = changed(changes)
    [(path, _)] = schema_errors(schema, apply_defaults(schema, obj))
    assert path == schema_path
    [error] = validate(obj)
    assert error.field == field
    assert words in str(error), str(error)


# --------------------------------------------------------------------------------------------
# Random specs: the CEL and the Python rules reject exactly the same ones, with the same messages
# --------------------------------------------------------------------------------------------

_maybe_int = st.none() | st.integers(min_value=0, max_value=80)


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    """Specs that are structurally valid but often break one or more cross-field rules."""
    source_kinds = draw(st.sets(st.sampled_from(["hub", "pvc", "uri"]), max_size=3))
    values = {"hub": "org/model", "pvc": {"claimName": "models"}, "uri": "s3://bucket/model"}
    model: dict[str, Any] = {"source": {kind: values[kind] for kind in sorted(source_kinds)}}
    if draw(st.booleans()):
        model["revision"] = "main"
    spec: dict[str, Any] = {"model": model}
    if draw(st.booleans()):
        spec["gpusPerPod"] = draw(st.sampled_from([0, 1, 2, 4, 8]))
    parallelism: dict[str, Any] = {}
    for key in ("tensor", "ulysses"):
        if draw(st.booleans()):
            parallelism[key] = draw(st.sampled_from([1, 2, 4, 8]))
    if draw(st.booleans()):
        parallelism["shiftParallel"] = {"enabled": draw(st.booleans())}
    empty_section = draw(st.booleans())
    if parallelism or empty_section:
        spec["parallelism"] = parallelism
    speculation: dict[str, Any] = {"method": draw(st.sampled_from(["suffix", "arctic", "ngram", "none"]))}
    tokens = draw(st.none() | st.integers(min_value=1, max_value=80))
    if tokens is not None:
        speculation["numSpeculativeTokens"] = tokens
    if draw(st.booleans()):
        speculation["suffix"] = {"maxTreeDepth": draw(st.integers(min_value=2, max_value=80))}
    if draw(st.booleans()):
        kinds = draw(st.sets(st.sampled_from(["hub", "uri"]), max_size=2))
        draft: dict[str, Any] = {"source": {kind: values[kind] for kind in sorted(kinds)}}
        if draw(st.booleans()):
            draft["revision"] = "v2"
        speculation["draftModel"] = draft
    for key in ("softCap", "hardCap"):
        value = draw(_maybe_int)
        if value is not None:
            speculation[key] = value
    if draw(st.booleans()):
        bounds: dict[str, Any] = {"enabled": True}
        for key in ("min", "max"):
            value = draw(_maybe_int)
            if value is not None:
                bounds[key] = value
        speculation["capController"] = bounds
    spec["speculation"] = speculation
    replicas = draw(st.none() | st.integers(min_value=0, max_value=5))
    if replicas is not None:
        spec["replicas"] = replicas
    if draw(st.booleans()):
        auto = {"maxReplicas": draw(st.integers(min_value=1, max_value=6))}
        if draw(st.booleans()):
            auto["minReplicas"] = draw(st.integers(min_value=1, max_value=6))
        spec["autoscaling"] = auto
    if draw(st.booleans()):
        where = draw(st.sampled_from(["requests", "limits"]))
        resource = draw(st.sampled_from(["cpu", "nvidia.com/gpu", "memory"]))
        spec["resources"] = {where: {resource: 1}}
    if draw(st.booleans()):
        spec["extraArgs"] = draw(
            st.lists(
                st.sampled_from(
                    [
                        "--max-num-seqs=8",
                        "--model",
                        "--model-impl=vllm",
                        "--port=1",
                        "-tp",
                        "--enforce-eager",
                        "--speculative-config={}",
                        "--download_dir=/x",
                    ]
                ),
                max_size=4,
            )
        )
    if draw(st.booleans()):
        spec["monitoring"] = {
            "serviceMonitor": {"enabled": draw(st.booleans())},
            "podMonitor": {"enabled": draw(st.booleans())},
        }
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": "random"}, "spec": spec}


@settings(max_examples=300, deadline=None)
@given(obj=specs())
def test_cel_and_python_reject_the_same_specs(
    obj: dict[str, Any], schema: dict[str, Any], cel: CelRules
) -> None:
    python = sorted(f"{e.field}: {e.message}" for e in validate(obj))
    assert python == cel_messages(schema, cel, obj)
