"""Turn ``bench/results/*.json`` into ``docs/benchmarks.md`` (tables) and PNG plots in ``docs/img/``.

Only figures from result files appear in the report. The findings around them live in
``bench/report_intro.md``, where every measured number is a reference to a result file's field
that is rendered here (``bench/claims.py``); a reference that does not resolve, or a measured-looking
number written by hand, fails the report, and so does a number in README.md's checked suffix
paragraph that the findings do not render.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.claims import Claim, ClaimError, check_quoted, loader
from bench.claims import render as render_claims

REPO = Path(__file__).resolve().parents[1]
INTRO = Path(__file__).with_name("report_intro.md")
README = REPO / "README.md"


def load_results(results_dir: Path) -> list[dict[str, Any]]:
    runs = []
    for path in sorted(results_dir.glob("*.json")):
        if path.name.startswith(("control-", "shift-part-", "operator-scale-", "mutation-")):
            # the control simulator's rows (control_lines); shift parts (merged files hold them);
            # the operator's scale runs (bench/operator_scale.py); mutation testing summaries
            # (tools/mutation/run.py --out)
            continue
        data = json.loads(path.read_text())
        data["_file"] = path.name
        data.setdefault("created", data.get("time", ""))  # the training runs' files say "time"
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
        if case["kind"] == "acceptance":
            continue
        if case["kind"] == "e2e":
            lines += e2e_lines(case, engines, ratios)
            continue
        if case["kind"] == "draft-cost":
            lines += draft_cost_lines(case, engines, ratios)
            continue
        if case["kind"] == "latency":
            who = (
                "1 request"
                if case["num_prompts"] == 1
                else f"{case['num_prompts']} requests decoding together"
            )
            lines += [
                f"**{name}** ({who}, {case['input_len']} in / {case['output_len']} out, "
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


def e2e_lines(case: dict[str, Any], engines: dict[str, Any], ratios: dict[str, Any]) -> list[str]:
    """The real model end to end: per round, time per output token and acceptance."""
    name = case["name"]
    lines = [
        f"**{name}** (the real prompts one request at a time, greedy, up to {case['output_len']} tokens, "
        f"{case['repeats']} rounds; round 1 cold, medians over rounds 2..)",
        "",
        "| engine | ms per token | vs vanilla | tokens per drafting step | per round: ms/token (tok/step) |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for engine, res in engines.items():
        if "cases" not in res:
            lines.append(f"| {engine} | {_error(res)} | | | |")
            continue
        c = res["cases"][name]
        ratio = ratios.get(f"{engine}/vanilla", {}).get(f"{name}.ms_per_token")
        rounds = ", ".join(
            f"{r['ms_per_token']:.3f} ({r['tokens_per_drafting_step']:.2f})" for r in c["rounds"]
        )
        lines.append(
            f"| {engine} | {_fmt(c['ms_per_token']['median'], 3)} | {_ratio(ratio)} | "
            f"{_fmt(c['tokens_per_drafting_step']['median'], 2)} | {rounds} |"
        )
    return [*lines, ""]


def draft_cost_lines(case: dict[str, Any], engines: dict[str, Any], ratios: dict[str, Any]) -> list[str]:
    """Time per engine step and the drafter's own time per step (bench.worker.run_draft_cost)."""
    name = case["name"]
    lines = [
        f"**{name}** ({case['num_prompts']} requests decoding together, {case['input_len']} in / "
        f"{case['output_len']} out, median of {case['repeats']}; drafter timed between device "
        "synchronisations in one more run)",
        "",
        "| engine | ms per step | step vs vanilla | TPOT ms | drafter ms per step | "
        "our head's own us per step | async scheduling |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for engine, res in engines.items():
        if "cases" not in res:
            lines.append(f"| {engine} | {_error(res)} | | | | | |")
            continue
        c = res["cases"][name]
        ratio = ratios.get(f"{engine}/vanilla", {}).get(f"{name}.step_ms")
        draft = c.get("draft_ms", {}).get("per_step")
        own = (c.get("head_counters") or {}).get("us_per_step")
        scheduling = (res.get("settings") or {}).get("async_scheduling")
        lines.append(
            f"| {engine} | {_fmt(c['step_ms']['median'], 3)} | {_ratio(ratio)} | "
            f"{_fmt(c['tpot_ms']['median'], 3)} | {_fmt(draft, 3)} | {_fmt(own, 0)} | "
            f"{'-' if scheduling is None else ('on' if scheduling else 'off')} |"
        )
    return [*lines, ""]


def implied_lines(run: dict[str, Any]) -> list[str]:
    """The ``implied`` section of a draft-head cost run (bench/headcost.py): formulas and figures."""
    section = run.get("implied")
    if not section:
        return []
    formula = section["formula"]
    lines = [
        f"Implied per-request speedup (tau: {formula['tau']}, from `{section['sources']['tau']}`; "
        f"verification cost at k = 3 from `{section['sources']['verify_k3_ratio']}`): direct = "
        f"`{formula['direct']}`, composed = `{formula['composed']}`.",
        "",
    ]
    if "error" in section:
        return [*lines, f"Not computed: {section['error']}", ""]
    traces = list(section["tau"])
    lines += [
        "| engine | case | step vs vanilla | drafter vs vanilla step | verify k=3 vs vanilla | "
        + " | ".join(f"direct {t}" for t in traces)
        + " | "
        + " | ".join(f"composed {t}" for t in traces)
        + " |",
        "| --- | --- |" + " ---: |" * (3 + 2 * len(traces)),
    ]
    for engine, rows in section.get("engines", {}).items():
        for case, row in rows.items():
            composed = row.get("composed", {})
            lines.append(
                f"| {engine} | {case} | {_fmt(row['step_ratio'], 3)} | {_fmt(row['draft_ratio'], 3)} | "
                f"{_fmt(row.get('verify_k3_ratio'), 3)} | "
                + " | ".join(_fmt(row["direct"][t], 3) for t in traces)
                + " | "
                + " | ".join(_fmt(composed.get(t), 3) for t in traces)
                + " |"
            )
    return [*lines, ""]


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


def online_cases(run: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's online cases (results written before the config recorded them: the suite's own)."""
    if run["config"].get("online"):
        cases: list[dict[str, Any]] = run["config"]["online"]
        return cases
    from dataclasses import asdict

    from bench.suites import SUITES

    suite = SUITES.get(run["suite"])
    return [asdict(c) for c in suite.online] if suite else []


def online_lines(run: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for case in online_cases(run):
        lines += [
            f"**{case['name']}** (Poisson arrivals for {case['seconds_per_rate']:.0f} s per rate, "
            f"{case['input_len']} in / {case['output_len']} out, streamed)",
            "",
            "| engine | offered req/s | achieved req/s | output tok/s | TTFT p50 / p95 / p99 ms | "
            "TPOT p50 / p95 ms | E2E p50 / p95 / p99 s | failed |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for engine, res in run["engines"].items():
            rows = res.get("online", {}).get(case["name"])
            if rows is None:
                lines.append(f"| {engine} | {_error(res)} | | | | | | |")
                continue
            for row in rows:
                ttft = " / ".join(_fmt(row["ttft_s"][q] * 1e3, 0) for q in ("p50", "p95", "p99"))
                tpot = " / ".join(_fmt(row["tpot_s"][q] * 1e3, 1) for q in ("p50", "p95"))
                e2e = " / ".join(_fmt(row["e2e_s"][q]) for q in ("p50", "p95", "p99"))
                lines.append(
                    f"| {engine} | {row['rate_per_s']:g} | {_fmt(row['request_rate_achieved'])} | "
                    f"{_fmt(row['throughput_output_tok_s'], 0)} | {ttft} | {tpot} | {e2e} | {row['failed']} |"
                )
        lines.append("")
    return lines


def acceptance_lines(run: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for case in run["config"]["cases"]:
        if case["kind"] != "acceptance":
            continue
        lines += [
            f"**{case['name']}** (real prompts from bench/texts.py, greedy, "
            f"up to {case['output_len']} tokens)",
            "",
            "| engine | prompts | output tokens | drafts | draft tokens | accepted | accept rate | "
            "tokens per drafting step | tokens per step |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for engine, res in run["engines"].items():
            if "cases" not in res:
                lines.append(f"| {engine} | {_error(res)} | | | | | | | |")
                continue
            c = res["cases"][case["name"]]
            lines.append(
                f"| {engine} | {c['prompts']} | {c['output_tokens']} | {c['num_drafts']:.0f} | "
                f"{c['num_draft_tokens']:.0f} | {c['num_accepted_tokens']:.0f} | "
                f"{_fmt(c['accept_rate'], 3)} | "
                f"{_fmt(c['tokens_per_drafting_step'], 3)} | {_fmt(tokens_per_step(c), 3)} |"
            )
        lines.append("")
    return lines


def tokens_per_step(case: dict[str, Any]) -> float:
    """Mean tokens a request gains per engine step: every step yields 1 token plus accepted drafts."""
    out, accepted = case["output_tokens"], case["num_accepted_tokens"]
    return float(out / (out - accepted)) if out > accepted else float("nan")


def verify_cost_lines(verify: dict[str, Any]) -> list[str]:
    """The verify suite's cost of a verification step relative to a plain one, per batch size. (No
    implied speedup: that would divide another run's acceptance by this run's cost.)"""
    ratios = verify.get("ratios", {})
    cases = [c for c in verify["config"]["cases"] if c["kind"] == "latency"]
    engines = sorted(k.split("/")[0] for k in ratios)
    if not engines:
        return []
    lines = [
        "Verification cost relative to no speculation (TPOT with k drafts per request and acceptance "
        "forced to 0, over vanilla's TPOT at the same batch). Drafting pays only when a request gains "
        "more tokens per step than this ratio.",
        "",
        "| batch | " + " | ".join(f"{e} cost" for e in engines) + " |",
        "| ---: | " + " | ".join("---:" for _ in engines) + " |",
    ]
    for case in cases:
        cells = [_fmt(ratios[f"{e}/vanilla"][f"{case['name']}.tpot_ms"], 3) for e in engines]
        lines.append(f"| {case['num_prompts']} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def plot_online(run: dict[str, Any], out: Path) -> bool:
    """Latency vs load: TTFT and E2E percentiles against the offered request rate, per engine."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    cases = online_cases(run)
    if not cases:
        return False
    name = cases[0]["name"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for engine, res in run["engines"].items():
        rows = res.get("online", {}).get(name)
        if not rows:
            continue
        rates = [r["rate_per_s"] for r in rows]
        for ax, key, scale in ((axes[0], "ttft_s", 1e3), (axes[1], "e2e_s", 1.0)):
            for q, style in (("p50", "-o"), ("p95", "--s")):
                ax.plot(rates, [r[key][q] * scale for r in rows], style, label=f"{engine} {q}")
    axes[0].set_ylabel("TTFT (ms)")
    axes[0].set_yscale("log")
    axes[1].set_ylabel("end-to-end latency (s)")
    for ax in axes:
        ax.set_xlabel("offered load (requests / s)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{run['suite']} {name}: {_env_line(run)[:70]}", fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True


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


def engine_state_lines(run: dict[str, Any]) -> list[str]:
    """Spec-decode counters and our suffix drafter's own time per step, where the run recorded them."""
    lines: list[str] = []
    for engine, res in run["engines"].items():
        counters = res.get("spec_counters")
        suffix = None
        for worker in (res.get("arctic_state") or {}).get("workers", []):
            suffix = worker.get("suffix") or suffix
        if counters:
            drafted = counters.get("num_draft_tokens", 0.0)
            accepted = counters.get("num_accepted_tokens", 0.0)
            rate = f"{accepted / drafted:.3f}" if drafted else "-"
            lines.append(
                f"- {engine}: {drafted:,.0f} draft tokens, {accepted:,.0f} accepted (rate {rate}) over "
                "all cases and warm-ups"
            )
        if suffix:
            rows = suffix["rows"] / max(1, suffix["steps"])
            lines.append(
                f"- {engine}: our suffix drafter ({suffix['backend']} backend) spent "
                f"**{suffix['us_per_step']:.1f} us per engine step** ({rows:.1f} requests per step on "
                f"average, {suffix['steps']:,} steps, {suffix['drafted_tokens']:,} tokens drafted)"
            )
    return [*lines, ""] if lines else []


def speculator_train_lines(run: dict[str, Any]) -> list[str]:
    """``bench/speculator_train.py`` results: the GPU training run of the SmolLM2 draft heads."""
    m = run["metrics"]
    data = m.get("data", {})
    lines = [
        f"## {run['suite']} ({run['created']})",
        "",
        run["description"],
        "",
        f"- Machine: {m.get('gpu', m.get('device'))}; "
        "command: `python -m arctic_runtime.train.speculator run` "
        f"(bench/gpu, /work/briefs), post-processed by `python -m bench.speculator_train`; result file "
        f"`bench/results/{run['_file']}`",
        f"- Data: {data.get('train_sequences')} training answers "
        f"({data.get('train_answer_tokens')} tokens), "
        f"{data.get('held_out_sequences')} held-out answers ({data.get('held_out_answer_tokens')} tokens); "
        f"generation {m.get('generation_s')} s, hidden states {m.get('hidden_s')} s, "
        f"whole run {m.get('total_s')} s",
        "",
        "| head | trained params | file bytes | steps | train s | final loss per step | held-out k | "
        "tokens/step | accept rate | untrained tokens/step |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for kind, info in m.get("heads", {}).items():
        untrained = info.get("held_out_untrained", {}).get("all", {}).get("tokens_per_step", float("nan"))
        for k, acc in info.get("held_out", {}).items():
            lines.append(
                f"| {kind} | {info.get('params_trained', 0):,} | {run['head_bytes'].get(kind, 0):,} | "
                f"{info.get('steps')} | {info.get('seconds')} | {info.get('final_loss_per_step')} | {k} | "
                f"{acc['all']['tokens_per_step']:.3f} | {acc['all']['accept_rate']:.3f} | "
                f"{untrained:.3f} |"
            )
    kernels = m.get("kernels")
    if kernels:
        lines += ["", f"- Triton kernels vs references on the GPU (max abs error): `{json.dumps(kernels)}`"]
    return [*lines, ""]


def swiftkv_quality_lines(run: dict[str, Any]) -> list[str]:
    """``arctic_runtime.train.swiftkv report`` results: base vs distilled SwiftKV, held-out KL and
    top-1 agreement by prompt length, and multiple-choice accuracy per task."""
    lines = [
        f"## swiftkv-quality ({run['created']})",
        "",
        f"{run['model']}; L_kv = {run['num_key_value_layers']}, {run['trainable_parameters']:,} trained "
        f"parameters, {run['training']['steps']} steps over {run['training']['tokens']:,} tokens "
        f"({run['training']['seconds']:.0f} s) on the {run['machine']}.",
        "",
        f"- Command: `{run['command']}`; result file `bench/results/{run['_file']}`",
        "",
        "| held-out prompts | sequences | KL untrained init | KL trained | top-1 untrained | top-1 trained |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    init = run["held_out_untrained_init"]
    for bucket, row in run["held_out"].items():
        before = init.get(bucket, {})
        lines.append(
            f"| {bucket} | {row['sequences']} | {_fmt(before.get('kl'), 3)} | {_fmt(row['kl'], 3)} | "
            f"{_fmt(before.get('top1'), 3)} | {_fmt(row['top1'], 3)} |"
        )
    lines += [
        "",
        "| task | n | base acc | SwiftKV acc | delta (points) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for task, row in run["mc"]["tasks"].items():
        lines.append(
            f"| {task} | {row['n']} | {_fmt(row['base_acc'], 1)} | {_fmt(row['swiftkv_acc'], 1)} | "
            f"{_fmt(row['delta'], 1)} |"
        )
    lines += ["", f"Mean accuracy delta: {_fmt(run['mean_acc_delta'], 2)} points.", ""]
    return lines


def speculator_accept_lines(run: dict[str, Any]) -> list[str]:
    """``bench/speculator_accept.py`` results: suffix, head and hybrid on held-out traces."""
    lines = [
        f"## {run['suite']} ({run['created']})",
        "",
        run["description"],
        "",
        f"- Command: `{run.get('command', 'python -m bench.speculator_accept')}`; result file "
        f"`bench/results/{run['_file']}`; took {run['seconds']:.0f} s "
        + (
            f"in real vLLM engines on {_env_line(run)}"
            if run.get("device") == "gpu"
            else "on this machine's CPU"
        )
        + f"; Arctic's hybrid: {run['arctic_hybrid']}",
        f"- Traces: {json.dumps(run['traces'])}",
        *(
            f"- Engine {name}: {_error(res)}"
            for name, res in run.get("engines", {}).items()
            if "error" in res
        ),
        "",
        "| part | trace | method | head | tokens/step | accept rate | steps | drafted | accepted |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in run["rows"]:
        lines.append(
            f"| {r.get('part', 'all')} | {r['trace']} | {r['method']} | {r['head'] or ''} | "
            f"{r['tokens_per_step']:.3f} | {r['accept_rate']:.3f} | {r['steps']} | {r['drafted']} | "
            f"{r['accepted']} |"
        )
    if "threshold_sweep" not in run:  # split runs: the rule was chosen on the dev part
        return [*lines, ""]
    lines += [
        "",
        "Hybrid tokens per step by suffix-score threshold (chosen on these traces: indicative):",
        "",
    ]
    lines += ["| head@threshold | " + " | ".join(run["traces"]) + " | mixed |"]
    lines += ["| --- |" + " ---: |" * (len(run["traces"]) + 1)]
    for key, by in run["threshold_sweep"].items():
        lines.append(
            f"| {key} | "
            + " | ".join(f"{by.get(t, float('nan')):.3f}" for t in [*run["traces"], "mixed"])
            + " |"
        )
    return [*lines, ""]


def suffix_accept_lines(run: dict[str, Any]) -> list[str]:
    """Tables for ``bench/suffix_accept.py`` results: ours vs Arctic per trace and setting."""
    env = run["environment"]
    lines = [
        f"## {run['suite']} ({run['created']})",
        "",
        run["description"],
        "",
        f"- Environment: {env.get('host') or 'this machine'}: Python {env['python']} on {env['machine']} "
        f"({env['cpus']} cores), arctic-inference {env.get('arctic_inference') or 'not installed'}, "
        f"commit {env.get('commit')}",
        f"- Command: `make bench-suffix`; result file `bench/results/{run['_file']}`; took "
        f"{run['duration_s']:.0f} s",
        "",
        "| trace | setting | requests | output tokens | ours tok/step | Arctic tok/step | ratio | "
        "ours accept rate | Arctic accept rate | ours us/step | Arctic us/step |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for trace, rows in run["traces"].items():
        for setting in run["configs"]:
            row = rows[setting]
            ours, arctic = row["ours"], row.get("arctic")
            ours_us = ours["us_per_speculate"] + ours["us_per_update"]
            a_us = arctic["us_per_speculate"] + arctic["us_per_update"] if arctic else None
            lines.append(
                f"| {trace} | {setting} | {rows['requests']} | {rows['output_tokens']:,} | "
                f"{ours['tokens_per_step']:.3f} | {_fmt(arctic and arctic['tokens_per_step'], 3)} | "
                f"{_fmt(row.get('ratio_tokens_per_step'), 3)} | {ours['accept_rate']:.3f} | "
                f"{_fmt(arctic and arctic['accept_rate'], 3)} | {ours_us:.1f} | {_fmt(a_us, 1)} |"
            )
    lines += [
        "",
        "us/step: one request's speculate + update in the simulated loop (CPU time on this machine).",
        "",
    ]
    return lines


def suffix_speed_lines(run: dict[str, Any]) -> list[str]:
    """One ``bench/suffix_speed.py --out`` result: the per-step cost against the 300 us target."""
    env, r = run["environment"], run["result"]
    host = env.get("host") or f"{env['cpus']} cores"
    return [
        f"## {run['suite']} ({run['created']}, {host})",
        "",
        run["description"],
        "",
        f"- Environment: Python {env['python']} on {env['machine']} ({host}), commit {env.get('commit')}",
        f"- Command: `python -m bench.suffix_speed --backend {r['backend']} --out bench/results`; "
        f"result file `bench/results/{run['_file']}`",
        "",
        "| backend | batch | depth | us/step mean | p50 | p90 | update | speculate | target | met |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        f"| {r['backend']} | {r['batch']} | {r['max_depth']} | {r['us_per_step']:.1f} | "
        f"{r['us_per_step_p50']:.1f} | {r['us_per_step_p90']:.1f} | {r['us_update_per_step']:.1f} | "
        f"{r['us_speculate_per_step']:.1f} | {r['target_us_per_step']:.0f} | "
        f"{'yes' if r['meets_target'] else '**no**'} |",
        "",
    ] + (
        [
            f"The engine's own path (`SuffixDrafter.propose`, one call per step, vLLM-style numpy buffer): "
            f"**{r['us_per_step_engine']:.1f} us per step** (p50 {r['us_per_step_engine_p50']:.1f}, "
            f"p90 {r['us_per_step_engine_p90']:.1f}; target {r['target_us_per_step']:.0f}: "
            f"{'met' if r['meets_target_engine'] else '**not met**'})"
            + (
                f"; batched cache calls {r['us_per_step_batched']:.1f} us."
                if "us_per_step_batched" in r
                else "."
            ),
            "",
        ]
        if "us_per_step_engine" in r
        else []
    )


def sampling_lines(run: dict[str, Any]) -> list[str]:
    """``python -m bench.sampling``: permutation p-values of "same distribution" per pair of runs."""
    env = run["environment"]
    lines = [
        f"## {run['suite']} ({run['created']}, {env.get('device')}, {env.get('host')})",
        "",
        run["description"],
        "",
        f"- Commit {env.get('commit')}, Python {env.get('python')}; command "
        f"`python -m bench.sampling --device {env.get('device')} --out bench/results`; result file "
        f"`bench/results/{run['_file']}`",
        "- Drafts per run (drafted / accepted tokens): "
        + ", ".join(
            f"{name} {c.get('spec_decode_num_draft_tokens', 0)}/{c.get('spec_decode_num_accepted_tokens', 0)}"
            for name, c in run["spec_counters"].items()
            if c
        ),
        "",
        "| run a | run b | p per answer position | p first 3 tokens | min |",
        "| --- | --- | --- | ---: | ---: |",
    ]
    for row in run["comparisons"]:
        low = min(row["p_per_position"] + [row["p_first3"]])
        mark = "**" if low < 0.01 else ""
        lines.append(
            f"| {row['a']} | {row['b']} | {', '.join(f'{p:.3f}' for p in row['p_per_position'])} | "
            f"{row['p_first3']:.3f} | {mark}{low:.3f}{mark} |"
        )
    lines += [
        "",
        "p: the share of 2,000 random relabellings at least as far apart (total variation) as the two "
        "runs; the floor is 0.0005. Runs of one engine with different seeds calibrate it.",
        "",
    ]
    return lines


def suffix_speed_ab_lines(run: dict[str, Any]) -> list[str]:
    """``bench/gpu/suffix_host.sh BASELINE``: this checkout against a baseline, alternated."""
    env = run["environment"]
    lines = [
        f"## {run['suite']} ({run['created']}, {env.get('host')})",
        "",
        run["description"],
        "",
        f"- Commit {env.get('commit')} against baseline {env.get('baseline')}, Python {env['python']}, "
        f"{env.get('clock', 'wall')}-clock time; result file `bench/results/{run['_file']}`",
        "",
        "| round | side | workload | per call | batched | engine path | engine p50 |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for row in run["rows"]:
        r = row["result"]
        lines.append(
            f"| {row['round']} | {row['side']} | {r.get('workload', 'edit')} | {r['us_per_step']:.1f} | "
            f"{_fmt(r.get('us_per_step_batched'), 1)} | {r['us_per_step_engine']:.1f} | "
            f"{r['us_per_step_engine_p50']:.1f} |"
        )
    engine: dict[tuple[str, str], list[float]] = defaultdict(list)
    for row in run["rows"]:
        engine[(row["result"].get("workload", "edit"), row["side"])].append(
            row["result"]["us_per_step_engine"]
        )
    lines.append("")
    for workload in sorted({w for w, _ in engine}):
        head, base = engine.get((workload, "head")), engine.get((workload, "baseline"))
        if head and base:
            ratio = (sum(head) / len(head)) / (sum(base) / len(base))
            lines.append(
                f"- {workload}: engine path head / baseline = **{ratio:.2f}x** (means of the rounds)"
            )
    lines += [
        "",
        "us per engine step for the whole batch of 64 (one core); per call: one add_tokens and one "
        "speculate per request.",
        "",
    ]
    return lines


def shift_lines(run: dict[str, Any]) -> list[str]:
    """A merged ``bench.shift`` result: one row per layout, the mode mix of shift, the ratios."""
    unit = "GPUs" if run["device"] == "gpu" else "CPU ranks"
    lines = [
        f"## shift: {run['shape']} on {run['gpus']} {unit} ({run['created']})",
        "",
        f"- Environment: {_env_line(run)}; result file `bench/results/{run['_file']}` "
        f"(`python -m bench.shift run --shape {run['shape']} --gpus {run['gpus']} --device {run['device']}`, "
        "then `merge`)",
        "",
        "| layout | start s | TTFT ms p50 | TPOT ms p50 | batch total tok/s | bursty e2e p50 / p95 / p99 s | "
        "bursty TTFT p95 s | steps sp / tp |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in run["engines"].items():
        if "cases" not in r:
            lines.append(f"| {name} | {_error(r)} | | | | | | |")
            continue
        c = r["cases"]
        e2e = c["bursty"]["e2e_s"]
        modes = [c[k].get("modes") for k in ("single", "batch", "bursty")]
        steps = "-"
        if all(modes):
            sp = sum(m["steps"]["sp"] for m in modes if m)
            tp = sum(m["steps"]["tp"] for m in modes if m)
            steps = f"{sp} / {tp}"
        lines.append(
            f"| {name} | {r['start_s']:.0f} | {_fmt(c['single']['ttft_ms']['p50'], 1)} | "
            f"{_fmt(c['single']['tpot_ms']['p50'], 2)} | {_fmt(c['batch']['total_tok_s'], 0)} | "
            f"{_fmt(e2e['p50'])} / {_fmt(e2e['p95'])} / {_fmt(e2e['p99'])} | "
            f"{_fmt(c['bursty']['ttft_s']['p95'])} | {steps} |"
        )
    lines += ["", "Ratios (shift over each layout; below 1 is better for times, above 1 for throughput):", ""]
    for pair, row in sorted(run["ratios"].items()):
        lines.append(f"- {pair}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()))
    return [*lines, ""]


def render(
    results_dir: Path, docs: Path, intro: Path | None = INTRO, claims: list[Claim] | None = None
) -> str:
    """The report: ``intro`` (the findings, claims rendered) and a section per result file;
    ``ClaimError`` if the findings cite what the results do not hold. The rendered claims are
    appended to ``claims`` when it is given."""
    runs = load_results(results_dir)
    by_suite: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        by_suite[run["suite"]].append(run)
    lines = ["# Benchmarks", ""]
    if intro is not None and intro.exists():
        text, rendered = render_claims(intro.read_text(), loader(results_dir))
        lines = [text.rstrip(), ""]
        if claims is not None:
            claims.extend(rendered)
    lines += [
        "<!-- Generated by `make bench-report` from bench/results/*.json; edit bench/report_intro.md. -->",
        "",
    ]
    for suite in sorted(by_suite):
        for run in sorted(by_suite[suite], key=lambda r: r["created"]):
            if run.get("kind") == "suffix-accept":
                lines += suffix_accept_lines(run)
                continue
            if run.get("kind") == "suffix-speed":
                lines += suffix_speed_lines(run)
                continue
            if run.get("kind") == "sampling":
                lines += sampling_lines(run)
                continue
            if run.get("kind") == "swiftkv-quality":
                lines += swiftkv_quality_lines(run)
                continue
            if run.get("kind") == "speculator-train":
                lines += speculator_train_lines(run)
                continue
            if run.get("kind") == "speculator-accept":
                lines += speculator_accept_lines(run)
                continue
            if run.get("kind") == "suffix-speed-ab":
                lines += suffix_speed_ab_lines(run)
                continue
            if suite == "shift":
                lines += shift_lines(run)
                continue
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
            lines += acceptance_lines(run)
            lines += online_lines(run)
            lines += engine_state_lines(run)
            lines += implied_lines(run)
            if suite.startswith("verify"):
                lines += verify_cost_lines(run)
            png = docs / "img" / f"{run['_file'].removesuffix('.json')}.png"
            if plot_online(run, png):
                lines += [f"![{suite}: latency vs load](img/{png.name})", ""]
            elif plot_throughput(run, png):
                lines += [f"![{suite} throughput](img/{png.name})", ""]
    lines += control_lines(results_dir, docs)
    return "\n".join(lines).rstrip() + "\n"


def control_lines(results_dir: Path, docs: Path) -> list[str]:
    """The control-loop simulator (``make bench-control``): bench/results/control-<trace>.json rows."""
    traces = sorted(
        p
        for p in results_dir.glob("control-*.json")
        if p.name != "control-config.json"
        and not p.name.endswith("-levers.json")
        and "-h200-" not in p.name
        and "-whatif-" not in p.name
        and not p.name.startswith(("control-validation-", "control-served-", "control-repredict-"))
    )
    levers = sorted(results_dir.glob("control-*-levers.json"))
    if not traces:
        return []
    config_path = results_dir / "control-config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    sources = config.get("calibration", {}).get("sources", {})
    lines = [
        "## Control loop (simulated)",
        "",
        "Replica and speculation-cap policies on traffic traces, in `bench/control.py`'s simulator: "
        "continuous-batching replicas whose step time, verify cost (per draft length), prefill time and "
        "start time come from the GPU results above (module docstring: the model and its assumptions). "
        "`ours` = the operator's own ControlLoop (control/loop.py: its metrics window, decide_replicas "
        "and decide_cap); `static-cap-N` = the same replica policy with the soft cap fixed at N (none: "
        "no cap); `schedule-NAME` = the same replica policy, no caps, draft length by running requests "
        "(vLLM's Dynamic SD; NAME lists the ranges, k5-16 = 5 tokens up to 16 running); "
        "`keda-waiting-5` = KEDA on summed waiting requests with HPA defaults.",
        "",
        f"- Command: `make bench-control`; commit {str(config.get('commit'))[:10]}, seed "
        f"{config.get('seed')}, created {config.get('created')}, took {config.get('duration_s')} s",
    ]
    lines += [f"- Calibration {what}: {source}" for what, source in sources.items()]
    ours = config.get("policies", {}).get("ours", {})
    if ours:
        lines.append(
            f"- ours and static-cap-N: spec.autoscaling {json.dumps(ours.get('autoscaling'))}; ours' "
            f"capController {json.dumps(ours.get('speculation', {}).get('capController'))}; a pod is "
            f"ready {config.get('pod_start_s', 0):.0f} s after it is created"
        )
    lines += [
        "",
        "| trace | policy | TTFT p50 s | TTFT p95 s | E2E p95 s | GPU-seconds | mean replicas | "
        "scale events | cap changes | drafted |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for path in traces:
        for row in json.loads(path.read_text()):
            lines.append(
                f"| {row['trace']} | {row['policy']} | {_fmt(row['p50_ttft_s'], 3)} | "
                f"{_fmt(row['p95_ttft_s'], 3)} | {_fmt(row['p95_e2e_s'])} | {_fmt(row['gpu_seconds'], 0)} | "
                f"{_fmt(row.get('mean_replicas'))} | {row.get('scale_events', '-')} | "
                f"{row.get('cap_changes', '-')} | {_fmt(row.get('drafted_fraction'))} |"
            )
    lines.append("")
    for path in levers:
        record = json.loads(path.read_text())
        lines += [
            f"Burst levers, `ours` on one trace (`{path.name}`: `{record.get('command')}`, commit "
            f"{str(record.get('commit'))[:10]}):",
            "",
            "| setting | pod start s | TTFT p95 s | E2E p95 s | GPU-seconds | max replicas |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in record.get("rows", []):
            lines.append(
                f"| {row['setting']} | {_fmt(row.get('pod_start_s'), 0)} | {_fmt(row['p95_ttft_s'], 3)} | "
                f"{_fmt(row['p95_e2e_s'])} | {_fmt(row['gpu_seconds'], 0)} | {row.get('max_replicas', '-')} |"
            )
        lines.append("")
    if (docs / "img" / "control-latency.png").exists():
        lines += ["![control loop: p95 TTFT and GPU-seconds](img/control-latency.png)", ""]
    return lines + validation_lines(results_dir)


def validation_lines(results_dir: Path) -> list[str]:
    """The simulator against one real engine (``bench.control_validate``): per run and trace, the
    measured and predicted percentiles and their ratios (predicted / measured)."""
    keys = ("p50_ttft_s", "p95_ttft_s", "p50_tpot_s", "p95_tpot_s")
    lines: list[str] = []
    for path in sorted(results_dir.glob("control-validation-*.json")):
        record = json.loads(path.read_text())
        setting = record.get("setting", {})
        if not lines:
            lines += ["### The simulator against a real engine", ""]
        lines += [
            f"`{path.name}`: {record.get('note')}; {setting.get('gpu') or setting.get('device')}, "
            f"{setting.get('model')}, engine start {setting.get('engine_start_s')} s, commit "
            f"{str(setting.get('commit'))[:10]}, `{setting.get('command')}`"
            + ("" if record.get("validation") else " (a smoke run: not a validation)"),
            "",
            "| trace | requests | side | TTFT p50 s | TTFT p95 s | TPOT p50 s | TPOT p95 s | within 15 % |",
            "| --- | ---: | --- | ---: | ---: | ---: | ---: | --- |",
        ]
        for t in record.get("traces", []):
            sides = [("measured", t["measured"], "")]
            sides.append(("predicted", t["predicted"], str(t.get("within_15pct"))))
            sides.append(("ratio", t["ratio"], ""))
            # a second prediction, from another calibration
            for name, label in (("probe", "the probe"), ("h200", "the H200 files"), ("served", "the probe")):
                if f"predicted_{name}" in t:
                    sides.append(
                        (
                            f"predicted from {label}",
                            t[f"predicted_{name}"],
                            str(t.get(f"within_15pct_{name}")),
                        )
                    )
                    sides.append((f"ratio ({name})", t[f"ratio_{name}"], ""))
            for side, values, within in sides:
                cells = " | ".join(_fmt(values.get(k), 3) for k in keys)
                lines.append(f"| {t['trace']} | {t['requests']} | {side} | {cells} | {within} |")
        lines.append("")
    return lines


def write_report(
    results_dir: Path | None = None, docs: Path | None = None, readme: Path | None = None
) -> Path:
    """Render docs/benchmarks.md; ``ClaimError`` (nothing written) when a finding, or a number in
    README's checked paragraph, is not backed by the result files."""
    results_dir = results_dir or REPO / "bench" / "results"
    docs = docs or REPO / "docs"
    readme = readme or README
    claims: list[Claim] = []
    text = render(results_dir, docs, claims=claims)
    problems = check_quoted(readme.read_text(), claims, readme.name) if readme.exists() else []
    control = docs / "control.md"
    if control.exists():  # the control loop's findings are quoted from the report's
        problems += check_quoted(control.read_text(), claims, control.name)
    if problems:
        raise ClaimError("claims not backed by bench/results:\n  " + "\n  ".join(problems))
    docs.mkdir(parents=True, exist_ok=True)
    path = docs / "benchmarks.md"
    path.write_text(text)
    return path
