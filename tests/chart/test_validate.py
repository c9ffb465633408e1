"""Every rendered object is valid for every Kubernetes version the chart claims (Chart.yaml
kubeVersion), by Kubernetes' own OpenAPI schemas in strict mode (kubernetes-validate): a misspelt or
misplaced field fails here instead of at `kubectl apply` time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from tests.chart import chartkit

Docs = dict[str, list[dict[str, Any]]]

#: Custom resources kubernetes-validate has no schema for; checked elsewhere (test_deployment).
NOT_BUILTIN = {"ServiceMonitor"}


@pytest.mark.parametrize("version", chartkit.K8S_VERSIONS)
@pytest.mark.parametrize("scenario", list(chartkit.SCENARIOS))
def test_rendered_manifests_pass_strict_validation(rendered: Docs, scenario: str, version: str) -> None:
    checked = []
    for doc in rendered[scenario]:
        if doc["kind"] in NOT_BUILTIN:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            name = f"{doc['kind']}/{doc['metadata']['name']}"
            pytest.fail(f"{name} invalid for Kubernetes {version}: {where}: {exc.message}")
        checked.append(doc["kind"])
    assert {"Deployment", "CustomResourceDefinition", "ClusterRole", "ServiceAccount", "Service"} <= set(
        checked
    )


def test_strict_validation_catches_a_misplaced_field(rendered: Docs) -> None:
    """The validator really is strict (guards the test above against passing vacuously)."""
    (dep,) = chartkit.by_kind(rendered["cluster-wide"], "Deployment")
    broken = yaml.safe_load(yaml.safe_dump(dep))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, chartkit.K8S_VERSIONS[-1], strict=True)


def test_chart_claims_the_versions_it_is_validated_for() -> None:
    chart = yaml.safe_load((chartkit.CHART_DIR / "Chart.yaml").read_text())
    assert chart["kubeVersion"] == f">={chartkit.K8S_VERSIONS[0]}.0-0"


def test_helm_refuses_clusters_older_than_the_claim(chart: Path) -> None:
    old = chartkit.helm("template", "x", str(chart), "--kube-version", "1.29.9")
    assert old.returncode != 0 and "kubeVersion" in old.stderr, old.stderr
    oldest = chartkit.helm("template", "x", str(chart), "--kube-version", f"{chartkit.K8S_VERSIONS[0]}.0")
    assert oldest.returncode == 0, oldest.stderr
