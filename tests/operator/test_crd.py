"""The generated CRD: fresh, structural, documented, with the subresources and columns kubectl,
HPA and KEDA need."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from arctic_operator import crd as crd_module
from arctic_operator.api import CRD_NAME, GROUP, KIND, PLURAL, VERSION
from arctic_operator.validation import RULES
from tests.operator.apiserver_rules import (
    CRD_PATH,
    REPO,
    CelRules,
    node_at,
    structural_problems,
    walk,
)


def test_committed_crd_is_what_the_models_generate() -> None:
    committed = CRD_PATH.read_text(encoding="utf-8")
    assert committed == crd_module.render(), (
        f"{CRD_PATH.relative_to(REPO)} is stale: run `make crds` and commit the result"
    )


def test_generation_is_deterministic() -> None:
    assert crd_module.render() == crd_module.render()


def test_check_passes_on_the_committed_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert crd_module.main(["--check", "--output", str(CRD_PATH)]) == 0
    assert "up to date" in capsys.readouterr().out


def test_check_fails_with_a_clear_message_on_a_stale_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = tmp_path / "crd.yaml"
    stale.write_text(crd_module.render().replace("maxLength: 52", "maxLength: 63"), encoding="utf-8")
    assert crd_module.main(["--check", "--output", str(stale)]) == 1
    err = capsys.readouterr().err
    assert "stale" in err and "make crds" in err
    assert "-                maxLength: 63" in err and "+                maxLength: 52" in err
    assert stale.read_text(encoding="utf-8") != crd_module.render()  # --check writes nothing


def test_check_fails_on_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert crd_module.main(["--check", "--output", str(tmp_path / "absent.yaml")]) == 1
    assert "missing" in capsys.readouterr().err


def test_write_then_check(tmp_path: Path) -> None:
    out = tmp_path / "crds" / "x.yaml"
    assert crd_module.main(["--output", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == crd_module.render()
    assert crd_module.main(["--check", "--output", str(out)]) == 0


def test_module_entry_point_and_no_heavy_imports() -> None:
    """``python -m arctic_operator.crd --check`` works from the repo root, and generating the CRD
    and validating a resource import neither torch nor vLLM (the operator image has neither)."""
    check = subprocess.run(
        [sys.executable, "-m", "arctic_operator.crd", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stderr
    # The operator imports the runtime/operator contract (standard library only), nothing else of
    # the runtime.
    probe = (
        "import sys, arctic_operator.crd, arctic_operator.validation, arctic_operator.plan; "
        "heavy = sorted(m for m in sys.modules if m in ('torch', 'vllm', 'transformers') or "
        "(m.startswith('arctic_runtime') and m not in ('arctic_runtime', 'arctic_runtime.contract'))); "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    imports = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert imports.returncode == 0, imports.stdout + imports.stderr


def test_crd_object_is_valid_for_kubernetes_1_28_to_1_37(crd: dict[str, Any]) -> None:
    """Kubernetes' own CustomResourceDefinition schemas, strict (unknown fields are errors): 1.28 is
    the first with fieldPath and reason in x-kubernetes-validations."""
    validator: Any = importlib.import_module("kubernetes_validate")  # no type information shipped
    for minor in range(28, 38):
        validator.validate(crd, f"1.{minor}", strict=True)
    with pytest.raises(validator.ValidationError, match="'reason'"):
        validator.validate(crd, "1.27", strict=True)


def test_names_and_scope(crd: dict[str, Any]) -> None:
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == CRD_NAME == "arcticinferenceservices.serving.arctic-serve.dev"
    spec = crd["spec"]
    assert spec["group"] == GROUP == "serving.arctic-serve.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": KIND,
        "listKind": "ArcticInferenceServiceList",
        "plural": PLURAL,
        "singular": "arcticinferenceservice",
        "shortNames": ["ais"],
        "categories": ["arctic"],
    }
    [version] = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == (VERSION, True, True)


def test_status_and_scale_subresources(crd: dict[str, Any], schema: dict[str, Any]) -> None:
    subresources = crd["spec"]["versions"][0]["subresources"]
    assert subresources["status"] == {}
    assert subresources["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    # The paths name fields of the right types (the API server refuses the CRD otherwise).
    assert node_at(schema, "spec.replicas")["type"] == "integer"
    assert node_at(schema, "status.replicas")["type"] == "integer"
    assert node_at(schema, "status.selector")["type"] == "string"
    # spec.replicas has no default: with a default it would always be "set" and clash with autoscaling.
    assert "default" not in node_at(schema, "spec.replicas")


def test_printer_columns(crd: dict[str, Any], schema: dict[str, Any]) -> None:
    columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [c["name"] for c in columns if c.get("priority", 0) == 0] == [
        "Ready",
        "Replicas",
        "Ready Replicas",
        "Spec Method",
        "Cap",
        "Age",
    ]
    by_name = {c["name"]: c for c in columns}
    assert by_name["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert by_name["Age"] == {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
    for column in columns:
        path = column["jsonPath"]
        if path.startswith((".metadata", ".status.conditions")):
            continue
        node = node_at(schema, path.lstrip("."))
        assert node["type"] == column["type"], column


def test_schema_is_structural(schema: dict[str, Any], cel: CelRules) -> None:
    assert structural_problems(schema, cel) == []


def _needs_description(path: str, node: dict[str, Any]) -> bool:
    if path.startswith("metadata"):
        return path == "metadata.name"  # Kubernetes allows no description on metadata itself
    if path.endswith("{}"):
        return False  # a map's values: the map describes them
    return not path.endswith("[]") or node.get("type") == "object"  # scalar list items likewise


def test_every_property_has_a_description(schema: dict[str, Any]) -> None:
    missing = [
        path or "(root)"
        for path, node in walk(schema)
        if _needs_description(path, node) and not node.get("description")
    ]
    assert missing == [], f"properties without a description (kubectl explain shows nothing): {missing}"


def test_preserve_unknown_fields_only_for_passthroughs(schema: dict[str, Any]) -> None:
    preserved = sorted(
        path for path, node in walk(schema) if node.get("x-kubernetes-preserve-unknown-fields")
    )
    assert preserved == ["spec.env[].valueFrom", "spec.scheduling.affinity"]


def test_quantities_are_int_or_string(schema: dict[str, Any]) -> None:
    for path in ("spec.resources.requests{}", "spec.resources.limits{}", "spec.modelCache.size"):
        node = dict(walk(schema))[path]
        assert node["x-kubernetes-int-or-string"] is True
        assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}]


def test_every_rule_is_in_the_crd_once_where_it_belongs(schema: dict[str, Any], cel: CelRules) -> None:
    entries = [
        (path, entry) for path, node in walk(schema) for entry in node.get("x-kubernetes-validations", [])
    ]
    assert len(entries) == len(RULES)
    for rule in RULES:
        [entry] = [e for path, e in entries if path == rule.at and e["rule"] == rule.cel]
        assert entry["message"] == rule.cel_message
        assert entry["message"].startswith(rule.field + ": ")
        assert entry.get("fieldPath") == rule.field_path
        assert entry["reason"] in ("FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired")
        cel.program(rule.cel)  # compiles with a real CEL parser


def test_rule_names_are_unique() -> None:
    names = [rule.name for rule in RULES]
    assert len(names) == len(set(names))


def test_make_crds_regenerates_the_crd_and_the_charts_copy() -> None:
    proc = subprocess.run(
        ["make", "-n", "--no-print-directory", "crds"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "-m arctic_operator.crd" in proc.stdout and "chart-crds" in proc.stdout
