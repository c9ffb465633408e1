"""What `helm install` prints afterwards (NOTES.txt) works when pasted into a shell."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.chart import chartkit


def notes(chart: Path, *sets: str) -> str:
    """NOTES as `helm install` prints them (Helm 4's client-side dry run needs no cluster)."""
    env = {**os.environ, "KUBECONFIG": os.devnull}
    proc = chartkit.helm(
        "install",
        chartkit.RELEASE,
        str(chart),
        "--namespace",
        chartkit.RELEASE_NAMESPACE,
        "--dry-run=client",
        *chartkit.set_args(list(sets)),
        env=env,
        check=True,
    )
    return proc.stdout.split("\nNOTES:\n", 1)[1]


@pytest.mark.parametrize(
    ("sets", "namespace"),
    [((), "default"), ((f"operator.watchNamespace={chartkit.WATCH_NAMESPACE}",), chartkit.WATCH_NAMESPACE)],
)
def test_the_sample_resource_command_applies_the_example(
    chart: Path, tmp_path: Path, sets: tuple[str, ...], namespace: str
) -> None:
    text = notes(chart, *sets)
    # step 2 is a heredoc: run it with a kubectl that records what it was given
    snippet = re.search(r"^kubectl .*<<'EOF'\n.*?^EOF$", text, re.MULTILINE | re.DOTALL)
    assert snippet, text
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "kubectl").write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path}/args\ncat > {tmp_path}/stdin\n'
    )
    (fake / "kubectl").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["bash", "-euc", snippet.group(0)], env=env, check=True, timeout=30)
    assert (tmp_path / "args").read_text().split() == ["-n", namespace, "apply", "-f", "-"]
    applied = yaml.safe_load((tmp_path / "stdin").read_text())
    assert applied == yaml.safe_load(chartkit.EXAMPLE_CR.read_text())
    assert f"kubectl -n {namespace} wait ais/{applied['metadata']['name']} --for=condition=Ready" in text


def test_notes_say_which_mode_and_when_paused(chart: Path) -> None:
    assert "in every namespace (ClusterRole)" in notes(chart)
    namespaced = notes(chart, f"operator.watchNamespace={chartkit.WATCH_NAMESPACE}")
    assert f'in namespace "{chartkit.WATCH_NAMESPACE}" only (Role + RoleBinding there)' in namespaced
    assert "PAUSED" in notes(chart, "operator.replicas=0")
    assert "PAUSED" not in notes(chart)
    assert "keeps the CRD" in notes(chart)


def test_notes_name_the_images_and_say_how_to_get_the_default_operator_image(chart: Path) -> None:
    text = notes(chart)
    assert "  operator:   ghcr.io/arctic-serve/operator:0.1.0\n" in text
    assert "  GPU engine: ghcr.io/arctic-serve/runtime:0.1.0\n" in text
    assert "  CPU engine: ghcr.io/arctic-serve/runtime-cpu:0.1.0\n" in text
    assert "`kind load image-archive .images/operator-0.1.0.tar`" in text
    assert "(`make images`, or docker build), push it to your registry" in text
    # once the operator image comes from the user's registry, the warning goes
    mine = notes(
        chart,
        "operator.image.repository=registry.example.com/arctic/operator",
        "operator.runtimeImage.tag=v2",
    )
    assert "  operator:   registry.example.com/arctic/operator:0.1.0\n" in mine
    assert "  GPU engine: ghcr.io/arctic-serve/runtime:v2\n" in mine
    assert "ImagePullBackOff" not in mine and "make images" not in mine
