"""Turn ``bench/results/*.json`` into ``docs/benchmarks.md`` (tables) and PNG plots in ``docs/img/``.

Only figures from result files appear in the report; the prose around them lives in
``bench/report_intro.md`` and is copied verbatim, so rerunning ``make bench-report`` never loses it.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
INTRO = Path(__file__).with_name("report_intro.md")


def load_results(results_dir: Path) -> list[dict[str, Any]]:
    runs = []
    for path in sorted(results_dir.glob("*.json")):
        data = json.loads(path.read_text())
        data["_file"] = path.name
        runs.append(data)
    return runs


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def _env_line(run: dict[str, Any]) -> str:
    env = run["environment"]
    parts = [
        env.get("gpu") or f"CPU ({env.get('cpus')} cores)",
        f"vLLM {env.get('vllm')}",
        f"torch {env.get('torch')}",
        f"arctic-serve {env.get('arctic_serve')}",
        f"commit {str(env.get('commit'))[:10]}",
    ]
    return ", ".join(str(p) for p in parts)


def _error(result: dict[str, Any]) -> str:
    return str(result.get("error", "not run"))[:80].replace("|", "/").replace("\n", " ")


def _ratio(value: float | None) -> str:
    return _fmt(value, 4) if value else "1 (baseline)"


def case_rows(run: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    cases = run["config"]["cases"]
    engines = run["engines"]
    ratios = run.get("ratios", {})
    for case in cases:
        name = case["name"]
        if case["kind"] == "latency":
            lines += [
                f"**{name}** (1 request, {case['input_len']} in / {case['output_len']} out, "
                f"median of {case['repeats']})",
                "",
                "| engine | TTFT ms | TPOT ms | TPOT spread | TPOT vs vanilla |",
                "| --- | ---: | ---: | ---: | ---: |",
            ]
            for engine, res in engines.items():
                if "cases" not in res:
                    lines.append(f"| {engine} | {_error(res)} | | | |")
                    continue
                c = res["cases"][name]
                ratio = ratios.get(f"{engine}/vanilla", {}).get(f"{name}.tpot_ms")
                lines.append(
                    f"| {engine} | {_fmt(c['ttft_ms']['median'])} | {_fmt(c['tpot_ms']['median'], 3)} | "
                    f"{_fmt(100 * c['tpot_ms']['spread_rel'], 1)}% | {_ratio(ratio)} |"
                )
        else:
            lines += [
                f"**{name}** ({case['num_prompts']} requests x {case['input_len']} in / "
                f"{case['output_len']} out, median of {case['repeats']})",
                "",
                "| engine | output tok/s | total tok/s | time s | spread | output tok/s vs vanilla |",
                "| --- | ---: | ---: | ---: | ---: | ---: |",
            ]
            for engine, res in engines.items():
                if "cases" not in res:
                    lines.append(f"| {engine} | {_error(res)} | | | | |")
                    continue
                c = res["cases"][name]
                ratio = ratios.get(f"{engine}/vanilla", {}).get(f"{name}.output_tok_s")
                lines.append(
                    f"| {engine} | {_fmt(c['output_tok_s']['median'], 0)} | "
                    f"{_fmt(c['total_tok_s']['median'], 0)} | "
                    f"{_fmt(c['elapsed_s']['median'])} | {_fmt(100 * c['output_tok_s']['spread_rel'], 1)}% | "
                    f"{_ratio(ratio)} |"
                )
        lines.append("")
    return lines


def floor_lines(run: dict[str, Any]) -> list[str]:
    floor = run.get("floor")
    if not floor or "floor_ms_per_token" not in floor:
        return []
    measured = [
        (e, r["cases"][c["name"]]["tpot_ms"]["median"])
        for e, r in run["engines"].items()
        if "cases" in r
        for c in run["config"]["cases"]
        if c["kind"] == "latency"
    ]
    lines = [
        "Physical floor for one request's decode step: "
        f"{floor['weight_bytes'] / 1e9:.2f} GB of bf16 weights (all but the input embedding table) / "
        f"{floor['copy_bandwidth_gb_s']:,.0f} GB/s measured copy bandwidth = "
        f"**{floor['floor_ms_per_token']:.2f} ms per token**."
    ]
    lines += [
        f"- {e}: {t:.3f} ms measured = {t / floor['floor_ms_per_token']:.2f}x the floor" for e, t in measured
    ]
    return [*lines, ""]


def plot_throughput(run: dict[str, Any], out: Path) -> bool:
    """Bar chart: output tok/s per engine for each throughput case (if matplotlib is installed)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    cases = [c["name"] for c in run["config"]["cases"] if c["kind"] == "throughput"]
    engines = [e for e, r in run["engines"].items() if "cases" in r]
    if not cases or not engines:
        return False
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / len(engines)
    for i, engine in enumerate(engines):
        values = [run["engines"][engine]["cases"][c]["output_tok_s"]["median"] for c in cases]
        ax.bar([x + i * width for x in range(len(cases))], values, width, label=engine)
    ax.set_xticks([x + width * (len(engines) - 1) / 2 for x in range(len(cases))], cases, fontsize=8)
    ax.set_ylabel("output tokens / s")
    ax.set_title(f"{run['suite']}: {_env_line(run)[:60]}", fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True


def render(results_dir: Path, docs: Path) -> str:
    runs = load_results(results_dir)
    by_suite: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        by_suite[run["suite"]].append(run)
    lines = [INTRO.read_text().rstrip(), ""] if INTRO.exists() else ["# Benchmarks", ""]
    lines += [
        "<!-- Generated by `make bench-report` from bench/results/*.json; edit bench/report_intro.md. -->",
        "",
    ]
    for suite in sorted(by_suite):
        for run in sorted(by_suite[suite], key=lambda r: r["created"]):
            starts = ", ".join(f"{e} {r.get('start_s', 0):.0f} s" for e, r in run["engines"].items())
            lines += [
                f"## {suite} ({run['created']})",
                "",
                f"{run['description']}",
                "",
                f"- Environment: {_env_line(run)}",
                f"- Command: `make bench SUITE={suite}`; result file `bench/results/{run['_file']}`; "
                f"the suite took {run['duration_s']:.0f} s "
                f"(engine starts: {starts})",
                "",
            ]
            lines += floor_lines(run)
            lines += case_rows(run)
            png = docs / "img" / f"{run['_file'].removesuffix('.json')}.png"
            if plot_throughput(run, png):
                lines += [f"![{suite} throughput](img/{png.name})", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_report(results_dir: Path | None = None, docs: Path | None = None) -> Path:
    results_dir = results_dir or REPO / "bench" / "results"
    docs = docs or REPO / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    path = docs / "benchmarks.md"
    path.write_text(render(results_dir, docs))
    return path
