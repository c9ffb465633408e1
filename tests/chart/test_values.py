"""values.schema.json: a wrong value fails the install with the field named, in Helm 4 and Helm 3."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.chart import chartkit


@pytest.mark.parametrize("binary", [chartkit.HELM, chartkit.HELM3], ids=["helm4", "helm3"])
@pytest.mark.parametrize("bad", chartkit.BAD_VALUES, ids=[b.set_arg for b in chartkit.BAD_VALUES])
def test_bad_value_is_rejected_naming_the_field(chart: Path, bad: chartkit.BadValue, binary: Path) -> None:
    proc = chartkit.helm("template", "x", str(chart), "--set", bad.set_arg, binary=binary)
    assert proc.returncode != 0, f"{bad.set_arg} ({bad.why}) was accepted"
    assert "values don't meet the specifications of the schema" in proc.stderr
    assert re.search(bad.field, proc.stderr), proc.stderr


def test_zero_replicas_pauses_the_operator(chart: Path) -> None:
    docs = chartkit.documents(chartkit.template(chart, ["operator.replicas=0"]))
    (dep,) = chartkit.by_kind(docs, "Deployment")
    assert dep["spec"]["replicas"] == 0


def test_every_default_value_is_described_by_the_schema(chart: Path) -> None:
    """The defaults pass the strict schema (additionalProperties: false at every level)."""
    proc = chartkit.helm("lint", "--strict", str(chart))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("binary", [chartkit.HELM, chartkit.HELM3], ids=["helm4", "helm3"])
@pytest.mark.parametrize("scenario", list(chartkit.SCENARIOS))
def test_helm_lint_strict_is_clean(chart: Path, binary: Path, scenario: str) -> None:
    sets = chartkit.set_args(chartkit.SCENARIOS[scenario])
    proc = chartkit.helm("lint", "--strict", str(chart), *sets, binary=binary)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout


def test_helm3_and_helm4_render_the_same_objects(chart: Path) -> None:
    for sets in chartkit.SCENARIOS.values():
        four = chartkit.documents(chartkit.template(chart, sets))
        three = chartkit.documents(chartkit.template(chart, sets, binary=chartkit.HELM3))
        assert three == four
