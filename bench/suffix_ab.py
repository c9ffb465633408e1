"""Per-step cost of the native suffix backend, this checkout against a baseline commit, on one machine:
``python -m bench.suffix_ab --baseline REF [--rounds 4] [--out bench/results]``.

The baseline's runtime (``git archive REF``) is installed with its own ``setup.py`` into a scratch
folder; this checkout's runtime is the one installed here (``make setup``: built in place). Both are
driven by this checkout's ``bench.suffix_speed`` (the per-call replay, one ``add_tokens`` + one
``speculate`` per request, and the engine path, ``SuffixDrafter.propose``: one ``sync_and_draft`` per
step on a vLLM-style numpy buffer), in separate processes, alternating which side runs first in each
round, so that a noisy, shared machine slows both alike. Writes ``suffix-speed-ab-<time>.json`` (the
rows, and per workload the mean of each side's rounds and their ratio head / baseline) for
``make bench-report``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MEASURES = ("us_per_step", "us_per_step_engine", "us_per_step_engine_p50")


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, check=True, capture_output=True, text=True).stdout.strip()


def install_baseline(ref: str, work: Path) -> Path:
    """``ref``'s runtime, built by its own setup.py, in ``work/site``; returns that folder."""
    src, site = work / "src", work / "site"
    src.mkdir(parents=True)
    archive = work / "baseline.tar"
    paths = ["runtime", "operator", "kernels", "setup.py", "pyproject.toml", "README.md"]
    with archive.open("wb") as out:
        subprocess.run(["git", "archive", "--format=tar", ref, *paths], cwd=REPO, check=True, stdout=out)
    with tarfile.open(archive) as tar:
        tar.extractall(src, filter="data")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(src)],
        check=True,
    )
    return site


def run_side(site: Path | None, workload: str, steps: int, clock: str) -> dict[str, Any]:
    """One ``bench.suffix_speed`` run on the native backend; ``site``: a runtime to put first on the path
    (else the one installed in this environment)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*([str(site)] if site else []), str(REPO)])
    cmd = [sys.executable, "-m", "bench.suffix_speed", "--backend", "native", "--workload", workload]
    cmd += ["--steps", str(steps), "--clock", clock]
    out = subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per workload and measure: each side's mean over the rounds and head / baseline."""
    summary: dict[str, Any] = {}
    for workload in sorted({r["result"]["workload"] for r in rows}):
        entry: dict[str, Any] = {}
        for measure in MEASURES:
            means = {}
            for side in ("baseline", "head"):
                values = [
                    r["result"][measure]
                    for r in rows
                    if r["side"] == side and r["result"]["workload"] == workload
                ]
                means[side] = round(sum(values) / len(values), 1)
                entry[f"{side}_{measure}"] = values
            entry[f"{measure}_mean"] = means
            entry[f"{measure}_ratio"] = round(means["head"] / means["baseline"], 3)
        summary[workload] = entry
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.suffix_ab", description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", required=True, help="git commit or branch of the baseline runtime")
    parser.add_argument(
        "--baseline-site",
        type=Path,
        help="the baseline's runtime already installed in this folder (pip install --target); then "
        "--baseline only names it (a host without git history: bench/gpu/suffix_host.sh)",
    )
    parser.add_argument(
        "--head-site",
        type=Path,
        help="this checkout's runtime installed in this folder (default: the environment's)",
    )
    parser.add_argument("--rounds", type=int, default=4, help="alternated rounds per workload (default 4)")
    parser.add_argument("--workloads", default="edit,repeat", help="comma-separated (default edit,repeat)")
    parser.add_argument("--steps", type=int, default=100, help="steps per run (default 100)")
    parser.add_argument(
        "--clock", choices=["wall", "cpu"], default="wall", help="bench.suffix_speed's clock (default wall)"
    )
    parser.add_argument("--host", default=None, help="what machine this is, for the report")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)
    if args.baseline_site is not None:
        baseline = args.baseline
        head = os.environ.get("ARCTIC_BENCH_COMMIT") or "unknown"
    else:
        baseline = git("rev-parse", "--short", args.baseline)
        head = git("rev-parse", "--short", "HEAD") + (
            "+dirty" if git("status", "--porcelain", "runtime") else ""
        )
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="suffix-ab-") as tmp:
        site = args.baseline_site or install_baseline(args.baseline, Path(tmp))
        for workload in args.workloads.split(","):
            for round_no in range(1, args.rounds + 1):
                order = ("baseline", "head") if round_no % 2 else ("head", "baseline")
                for side in order:
                    result = run_side(
                        site if side == "baseline" else args.head_site, workload, args.steps, args.clock
                    )
                    rows.append(
                        {
                            "round": str(round_no),
                            "side": side,
                            "baseline": baseline,
                            "commit": head,
                            "result": result,
                        }
                    )
                    print(
                        f"{workload} round {round_no} {side}: per call {result['us_per_step']} us, engine "
                        f"{result['us_per_step_engine']} us",
                        flush=True,
                    )
    now = dt.datetime.now(dt.UTC)
    summary = summarize(rows)
    data: dict[str, Any] = {
        "suite": "suffix-speed-ab",
        "kind": "suffix-speed-ab",
        "description": "CPU cost per engine step of suffix decoding (batch 64, depth 64, native backend), "
        "this checkout against a baseline commit, alternated on one machine: python -m bench.suffix_ab "
        f"--baseline {args.baseline} --rounds {args.rounds} --clock {args.clock}",
        "created": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "environment": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "host": args.host or os.environ.get("ARCTIC_BENCH_HOST") or f"{os.cpu_count()}-core CPU machine",
            "commit": head,
            "baseline": baseline,
            "clock": args.clock,
        },
        "rows": rows,
        "summary": summary,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"suffix-speed-ab-{now.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(path)
    for workload, entry in summary.items():
        print(
            f"{workload}: engine path head / baseline = {entry['us_per_step_engine_ratio']}, per call "
            f"{entry['us_per_step_ratio']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
