"""`make chart-check`: the chart and the Dockerfiles through the real tools, one step per line.

1. the chart's copy of the CRDs equals crds/ (else: run `make chart-crds`);
2. helm lint --strict (Helm 4 and Helm 3), for each value scenario (RBAC cluster-wide or single
   namespace, monitoring off or on);
3. helm template for each scenario, into .cache/chart-check/<scenario>.yaml;
4. kubernetes-validate --strict of each rendering for every Kubernetes version the chart claims;
5. values.schema.json: helm template must fail, naming the field, for each bad value;
6. hadolint on every Dockerfile under images/.

While crds/ has no CRD yet, the chart is rendered from a temporary copy holding
tests/chart/placeholder-crd.yaml (said so on the first line). Exit status 1 on any failure, after
running every step.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.chart import chartkit

OUT = chartkit.ROOT / ".cache" / "chart-check"


class Checker:
    def __init__(self) -> None:
        self.failures: list[str] = []

    def step(self, title: str, ok: bool, detail: str = "") -> None:
        print(f"{'ok  ' if ok else 'FAIL'} {title}", flush=True)
        if not ok:
            self.failures.append(title)
            if detail:
                print("     " + detail.strip().replace("\n", "\n     "), flush=True)

    def run(self, title: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        self.step(title, proc.returncode == 0, proc.stdout + proc.stderr)
        return proc


def main() -> int:
    started = time.monotonic()
    missing = chartkit.missing_tools()
    if missing:
        print(f"chart-check: missing {', '.join(map(str, missing))}: run `make tools`", file=sys.stderr)
        return 2
    c = Checker()
    rel = chartkit.CHART_DIR.relative_to(chartkit.ROOT)

    in_sync, problem = chartkit.chart_crds_in_sync()
    c.step(f"{rel}/files/crds equals crds/*.yaml", in_sync, problem)

    with tempfile.TemporaryDirectory(prefix="chart-check-") as tmp:
        chart, sources = chartkit.prepare_chart(Path(tmp))
        if sources == [chartkit.PLACEHOLDER_CRD]:
            placeholder = chartkit.PLACEHOLDER_CRD.relative_to(chartkit.ROOT)
            print(f"note crds/ has no CRD yet: rendering with {placeholder}")

        for name, sets in chartkit.SCENARIOS.items():
            for binary in (chartkit.HELM, chartkit.HELM3):
                c.run(
                    f"{binary.name} lint --strict [{name}]",
                    [str(binary), "lint", "--strict", str(chart), *chartkit.set_args(sets)],
                )

        shutil.rmtree(OUT, ignore_errors=True)
        OUT.mkdir(parents=True)
        rendered: dict[str, Path] = {}
        for name, sets in chartkit.SCENARIOS.items():
            proc = chartkit.helm(
                "template",
                chartkit.RELEASE,
                str(chart),
                "--namespace",
                chartkit.RELEASE_NAMESPACE,
                *chartkit.set_args(sets),
            )
            path = OUT / f"{name}.yaml"
            path.write_text(proc.stdout)
            kinds = (
                sorted({d["kind"] for d in chartkit.documents(proc.stdout)}) if proc.returncode == 0 else []
            )
            c.step(
                f"helm template [{name}] -> {path.relative_to(chartkit.ROOT)}: {', '.join(kinds)}",
                proc.returncode == 0,
                proc.stderr,
            )
            rendered[name] = path

        for version in chartkit.K8S_VERSIONS:
            proc = subprocess.run(
                [
                    str(chartkit.KUBERNETES_VALIDATE),
                    "--strict",
                    "--quiet",
                    "-k",
                    version,
                    *map(str, rendered.values()),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            skipped = sorted(set(re.findall(r"kind (\w+) with api version", proc.stdout)))
            note = f" (no schema, skipped: {', '.join(skipped)})" if skipped else ""
            c.step(
                f"kubernetes-validate --strict -k {version}: {len(rendered)} renderings{note}",
                proc.returncode == 0,
                proc.stdout,
            )

        for bad in chartkit.BAD_VALUES:
            proc = chartkit.helm("template", "x", str(chart), "--set", bad.set_arg)
            message = next((ln.strip() for ln in proc.stderr.splitlines() if ln.strip().startswith("- ")), "")
            ok = proc.returncode != 0 and re.search(bad.field, proc.stderr) is not None
            c.step(f"rejects {bad.set_arg} ({bad.why}): {message}", ok, proc.stderr or "accepted")

    for dockerfile in chartkit.DOCKERFILES:
        c.run(f"hadolint {dockerfile.relative_to(chartkit.ROOT)}", [str(chartkit.HADOLINT), str(dockerfile)])

    elapsed = time.monotonic() - started
    if c.failures:
        print(f"chart-check: {len(c.failures)} failed ({elapsed:.1f} s)", file=sys.stderr)
        return 1
    print(f"chart-check: all passed ({elapsed:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
