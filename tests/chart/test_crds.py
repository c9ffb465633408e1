"""The CRD ships with the chart, upgrades with it, and survives `helm uninstall`."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.chart import chartkit

Docs = dict[str, list[dict[str, Any]]]
KEEP = {"helm.sh/resource-policy": "keep"}


def crds(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in chartkit.by_kind(docs, "CustomResourceDefinition")}


def load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    return doc


@pytest.mark.parametrize("scenario", list(chartkit.SCENARIOS))
def test_every_crd_is_rendered_with_the_keep_policy(
    rendered: Docs, crd_sources: list[Path], scenario: str
) -> None:
    rendered_crds = crds(rendered[scenario])
    assert sorted(rendered_crds) == sorted(load(p)["metadata"]["name"] for p in crd_sources)
    for crd in rendered_crds.values():
        assert crd["metadata"]["annotations"].items() >= KEEP.items()


def test_rendered_crd_is_the_source_crd(rendered: Docs, crd_sources: list[Path]) -> None:
    """The template parses and re-serialises the file (to add the annotation and labels); nothing else
    may change on the way, not a number's type nor a key."""
    rendered_crds = crds(rendered["cluster-wide"])
    for path in crd_sources:
        source = load(path)
        out = rendered_crds[source["metadata"]["name"]]
        assert out["spec"] == source["spec"]
        assert {k: v for k, v in out.items() if k != "metadata"} == {
            k: v for k, v in source.items() if k != "metadata"
        }
        src_meta = source["metadata"]
        assert out["metadata"]["annotations"].items() >= src_meta.get("annotations", {}).items()
        assert out["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"


def test_the_crd_has_the_names_the_operator_and_users_rely_on(rendered: Docs) -> None:
    crd = crds(rendered["cluster-wide"])["arcticinferenceservices.serving.arctic-serve.dev"]
    spec = crd["spec"]
    assert spec["group"] == "serving.arctic-serve.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "ArcticInferenceService"
    assert spec["names"]["plural"] == "arcticinferenceservices"
    assert "ais" in spec["names"]["shortNames"]
    (v1alpha1,) = [v for v in spec["versions"] if v["name"] == "v1alpha1"]
    assert v1alpha1["served"] and v1alpha1["storage"]
    assert "status" in v1alpha1["subresources"]
    assert v1alpha1["subresources"]["scale"]["specReplicasPath"] == ".spec.replicas"


def test_crds_install_false_renders_no_crd(chart: Path) -> None:
    docs = chartkit.documents(chartkit.template(chart, ["crds.install=false"]))
    assert crds(docs) == {}
    assert chartkit.by_kind(docs, "Deployment")


def test_the_charts_copy_of_the_crds_equals_crds_dir() -> None:
    """charts/arctic-serve/files/crds must be exactly crds/*.yaml (`make chart-crds` copies them).
    While crds/ has no CRD yet both are empty and the other tests render the placeholder."""
    in_sync, problem = chartkit.chart_crds_in_sync()
    assert in_sync, problem


def test_a_chart_without_crd_files_fails_with_what_to_run(chart: Path, tmp_path: Path) -> None:
    bare = tmp_path / "arctic-serve"
    shutil.copytree(chart, bare)
    for f in (bare / "files" / "crds").glob("*.yaml"):
        f.unlink()
    proc = chartkit.helm("template", "x", str(bare))
    assert proc.returncode != 0
    assert "make chart-crds" in proc.stderr and "crds.install=false" in proc.stderr
    assert chartkit.helm("template", "x", str(bare), "--set", "crds.install=false").returncode == 0


def test_the_example_resource_is_valid_for_the_crd(rendered: Docs) -> None:
    example = load(chartkit.EXAMPLE_CR)
    crd = crds(rendered["cluster-wide"])["arcticinferenceservices.serving.arctic-serve.dev"]
    group, version = example["apiVersion"].split("/")
    assert (group, example["kind"]) == (crd["spec"]["group"], crd["spec"]["names"]["kind"])
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema = served["schema"]["openAPIV3Schema"]
    jsonschema.Draft7Validator(schema).validate({k: v for k, v in example.items() if k != "metadata"})


def test_the_packaged_chart_carries_the_crd(chart: Path, tmp_path: Path) -> None:
    """`helm package` (what a chart repository serves) keeps files/crds and the example."""
    chartkit.helm("package", str(chart), "--destination", str(tmp_path), check=True)
    (tgz,) = tmp_path.glob("arctic-serve-*.tgz")
    docs = chartkit.documents(chartkit.template(tgz))
    assert "arcticinferenceservices.serving.arctic-serve.dev" in crds(docs)
