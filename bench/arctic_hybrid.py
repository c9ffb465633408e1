"""Arctic Inference 0.3.0's hybrid (its suffix decoding + our trained LSTM head) beside ours, both in
a real vLLM engine, on the held-out requests ``bench.speculator_accept`` replays:

    python -m bench.arctic_hybrid [--device gpu|cpu] [--out bench/results] [--budget-s 480]

Both engines get the same ``speculative_config``, Arctic's keys: ``{"method": "arctic", "model":
DIR, "num_speculative_tokens": 3, "enable_suffix_decoding": true}``, greedy, the real
SmolLM2-135M-Instruct. ``hybrid-engine`` is ours (plugin on) reading
``models/speculators/smollm2-135m-lstm`` as it is; ``arctic-hybrid`` is Arctic Inference's own
plugin (ours off) reading the same weights written in the layout its loader requires
(``save_arctic_layout``: its ``ArcticLSTMSpeculator.load_weights`` pops the per-gate keys
``forget_proj.i`` ... and fails with ``KeyError: 'forget_proj.0.weight'`` on our ``projs.i``; it
has no ``tie_base_embeddings``, so the base model's embedding is written into the folder as the
head's embedding and output head). The result records both facts.

Each engine replays the held-out part of ``heldout-chat``, ``heldout-code`` and ``edit`` (that
order, one request at a time, each answer as long as the trace's, ``ignore_eos``), in one engine
per method: the suffix caches carry over from trace to trace (the CPU replay starts a fresh one
per trace). Tokens per step as the replay counts them (the prefill step and its token left out):
``tokens = output tokens - requests`` over ``steps = engine steps - requests`` (engine steps: the
worker's ``execute_model`` calls that schedule tokens, ``bench.drafttimer``); accept rate and
drafts from vLLM's spec-decode counters (whose ``tokens - accepted`` is kept as
``steps_from_counters``: it counts drafts accepted past ``max_tokens`` too).
``match`` is the share of answers identical to the trace's (both greedy; the trace came from the
training run's forward pass, so bf16 kernels may part ways on near-ties); ``first_diff`` under each
engine lists, per trace and request, the first output position that differs (null: identical).

Writes ``speculator-accept-<time>.json`` (rows ``{part, trace, method, head, tokens_per_step,
accept_rate, ...}``, methods ``hybrid-engine`` and ``arctic-hybrid``), rewritten after each engine
so a run cut short keeps what it measured; an engine that fails or is not run has its reason under
``engines`` and no rows.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
HEAD = REPO / "models" / "speculators" / "smollm2-135m-lstm"
SPEC: dict[str, Any] = {"method": "arctic", "num_speculative_tokens": 3, "enable_suffix_decoding": True}
#: method -> (environment, reads the Arctic-layout copy, module it needs)
ENGINES: dict[str, tuple[dict[str, str], bool, str | None]] = {
    "hybrid-engine": ({"VLLM_PLUGINS": "arctic_serve", "ARCTIC_SERVE_ENABLED": "1"}, False, None),
    "arctic-hybrid": (
        {"VLLM_PLUGINS": "arctic_inference", "ARCTIC_INFERENCE_ENABLED": "1", "ARCTIC_SERVE_ENABLED": "0"},
        True,
        "arctic_inference",
    ),
}
ENGINE_ARGS = {
    "gpu": {"dtype": "bfloat16", "enforce_eager": True, "max_model_len": 2048, "gpu_memory_utilization": 0.5},
    "cpu": {"dtype": "float32", "enforce_eager": True, "max_model_len": 1024, "max_num_batched_tokens": 512},
}
MIN_ENGINE_S = 45.0


def heldout_requests(traces: Path, max_requests: int, max_tokens: int) -> dict[str, list[list[list[int]]]]:
    """Trace -> [[prompt, answer], ...]: the held-out part, in trace order (answers cut to
    ``max_tokens`` when given; ``max_requests`` per trace when given)."""
    from arctic_runtime.suffix.sim import load_trace
    from bench.speculator_accept import TRACES, part_of

    out: dict[str, list[list[list[int]]]] = {}
    for name in TRACES:
        reqs = [
            [list(r.prompt), list(r.output)[: max_tokens or None]]
            for r in load_trace(traces / f"{name}.jsonl")
            if len(r.output) >= 2 and part_of(list(r.prompt)) == "heldout"
        ]
        out[name] = reqs[: max_requests or None]
    return out


def arctic_copy(head: Path, base: str, out: Path) -> Path:
    """Our head in the layout Arctic Inference loads, the base model's embedding written in."""
    import torch
    from safetensors import safe_open

    from arctic_runtime.heads.model import load_head, save_arctic_layout

    with safe_open(str(Path(base) / "model.safetensors"), "pt") as f:
        embedding = f.get_tensor("model.embed_tokens.weight")
        lm_head = f.get_tensor("lm_head.weight") if "lm_head.weight" in f.keys() else None  # noqa: SIM118
    model = load_head(head, embedding, lm_head=lm_head, dtype=torch.bfloat16)
    return save_arctic_layout(model, out)


def arctic_loader_verdict(head: Path) -> str:
    """Whether Arctic Inference 0.3.0's loader takes ``head`` as it is, from its key names (its
    ``load_weights`` pops ``forget_proj.i`` ... for every ``projs.i`` it has)."""
    from safetensors import safe_open

    with safe_open(str(head / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    missing = [k for k in ("forget_proj.0.weight", "forget_emb.0.weight", "head.0.weight") if k not in keys]
    if not missing:
        return "reads it as it is"
    left_out = ", ".join(k for k in missing if k != "forget_proj.0.weight") or "nothing else"
    return (
        f"does not read {head.name} as it is: ArcticLSTMSpeculator.load_weights pops the per-gate "
        f"projections (KeyError: 'forget_proj.0.weight'; ours stores them joined as projs.i), and the "
        f"file leaves out {left_out} (tie_base_embeddings, a field "
        "Arctic does not have, which would leave them uninitialised); the run gives it the same "
        "weights in its layout (bench.arctic_hybrid.arctic_copy)"
    )


def rows_of(method: str, per_trace: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """Result rows from the spec-decode counter deltas per trace (and ``mixed``: their sum)."""
    total: dict[str, float] = {}
    rows = []
    for trace, c in [*per_trace.items(), ("mixed", total)]:
        if trace != "mixed":
            for k, v in c.items():
                total[k] = total.get(k, 0.0) + v
        tokens = int(c.get("output_tokens", 0) - c.get("requests", 0))
        accepted = int(c.get("num_accepted_tokens", 0))
        drafted = int(c.get("num_draft_tokens", 0))
        # decode steps: the worker's steps less one prefill step per request (one request at a
        # time); the counters' tokens - accepted overcount acceptance cut off by max_tokens
        steps = int(c["engine_steps"] - c["requests"]) if "engine_steps" in c else tokens - accepted
        rows.append(
            {
                "part": "heldout",
                "trace": trace,
                "method": method,
                "head": "lstm",
                "tokens_per_step": round(tokens / max(1, steps), 4),
                "accept_rate": round(accepted / max(1, drafted), 4),
                "steps": steps,
                "steps_from_counters": tokens - accepted,
                "tokens": tokens,
                "drafted": drafted,
                "accepted": accepted,
                "drafts": int(c.get("num_drafts", 0)),
                "requests": int(c.get("requests", 0)),
                "match": round(c.get("matched", 0) / max(1, c.get("requests", 0)), 4),
            }
        )
    return rows


def first_difference(got: list[int], answer: list[int]) -> int | None:
    """Index of the first output token that differs from the trace's answer (a shorter output
    differs where it ends), or None when the two are equal: where an engine parts ways with
    the greedy trace tells a near-tie late in an answer from a different prompt or sampler."""
    for i, (a, b) in enumerate(zip(got, answer, strict=False)):
        if a != b:
            return i
    return None if len(got) == len(answer) else min(len(got), len(answer))


def engine_main(plan_file: str) -> None:
    """In the engine's own process: replay every trace, one request at a time; print RESULT."""
    plan = json.loads(Path(plan_file).read_text())
    from vllm import LLM, SamplingParams

    from bench.worker import spec_counters

    t0 = time.perf_counter()
    llm = LLM(
        plan["model"],
        seed=0,
        disable_log_stats=False,
        worker_extension_cls="bench.drafttimer.DraftTimer",
        **plan["engine_args"],
    )
    result: dict[str, Any] = {"start_s": time.perf_counter() - t0, "traces": {}, "first_diff": {}}
    result["runner"] = llm.collective_rpc("bench_timer_install")[0]["runner"]
    for trace, reqs in plan["requests"].items():
        before = spec_counters(llm)
        steps0 = llm.collective_rpc("bench_timer_read")[0]["steps"]
        out_tokens = matched = 0
        diffs: list[int | None] = []
        started = time.perf_counter()
        for prompt, answer in reqs:
            params = SamplingParams(
                max_tokens=len(answer), temperature=0.0, ignore_eos=True, detokenize=False
            )
            out = llm.generate([{"prompt_token_ids": prompt}], params, use_tqdm=False)
            got = list(out[0].outputs[0].token_ids)
            out_tokens += len(got)
            matched += int(got == answer)
            diffs.append(first_difference(got, answer))
        after = spec_counters(llm)
        counters = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
        counters.update(requests=len(reqs), output_tokens=out_tokens, matched=matched)
        counters["engine_steps"] = llm.collective_rpc("bench_timer_read")[0]["steps"] - steps0
        counters["seconds"] = time.perf_counter() - started
        result["traces"][trace] = counters
        result["first_diff"][trace] = diffs
    print("RESULT " + json.dumps(result), flush=True)


def run_engine(
    method: str, plan: dict[str, Any], work: Path, device: str, timeout_s: float
) -> dict[str, Any]:
    from bench.run import engine_env, run_result_process

    env, _, requires = ENGINES[method]
    if requires and importlib.util.find_spec(requires) is None:
        return {
            "error": f"not run: {requires} is not importable (Arctic Inference 0.3.0 needs its CUDA build)"
        }
    plan_file = work / f"plan-{method}.json"
    plan_file.write_text(json.dumps(plan))
    return run_result_process(
        ["bench.arctic_hybrid", "engine", str(plan_file)], engine_env(env, device), timeout_s, method
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["engine"]:
        engine_main(argv[1])
        return 0
    p = argparse.ArgumentParser(prog="python -m bench.arctic_hybrid", description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=("gpu", "cpu"), default="gpu")
    p.add_argument("--head", default=str(HEAD))
    p.add_argument("--traces", default=str(REPO / "bench" / "traces"))
    p.add_argument("--out", default=str(REPO / "bench" / "results"))
    p.add_argument("--engines", default=",".join(ENGINES), help="comma-separated: " + ", ".join(ENGINES))
    p.add_argument("--max-requests", type=int, default=0, help="first N held-out requests per trace (0: all)")
    p.add_argument("--max-tokens", type=int, default=0, help="cut answers to N tokens (0: whole)")
    p.add_argument("--budget-s", type=float, default=480.0, help="wall-time limit of the whole run")
    args = p.parse_args(argv)
    started = time.perf_counter()
    from arctic_runtime.models import ensure_smollm2
    from bench.run import environment
    from bench.speculator_accept import display_path, file_sha256

    base = str(ensure_smollm2())
    head = Path(args.head)
    out_dir = Path(args.out)
    work = out_dir / ".work" / "arctic-hybrid"
    work.mkdir(parents=True, exist_ok=True)
    requests = heldout_requests(Path(args.traces), args.max_requests, args.max_tokens)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    result: dict[str, Any] = {
        "suite": "speculator-accept",
        "kind": "speculator-accept",
        "description": __doc__.split("\n")[0],
        "created": stamp,
        "device": args.device,
        "command": "python -m bench.arctic_hybrid " + " ".join(argv),
        "environment": environment(),
        "traces": {
            "heldout": {
                t: {"requests": len(r), "output_tokens": sum(len(a) for _, a in r)}
                for t, r in requests.items()
            }
        },
        "heads": {"lstm": {"dir": display_path(head), "sha256": file_sha256(head / "model.safetensors")}},
        "speculative_config": SPEC,
        "arctic_hybrid": "Arctic Inference 0.3.0's loader " + arctic_loader_verdict(head),
        "engines": {},
        "rows": [],
    }
    path = out_dir / f"speculator-accept-{stamp}.json"
    chosen = args.engines.split(",")
    for method in chosen:
        _, arctic_layout, _ = ENGINES[method]
        left = args.budget_s - (time.perf_counter() - started)
        if left < MIN_ENGINE_S:
            result["engines"][method] = {
                "error": f"not run: {left:.0f} s of the {args.budget_s:.0f} s budget left"
            }
        else:
            folder = head
            if arctic_layout:
                folder = arctic_copy(head, base, work / "smollm2-135m-lstm-arctic-layout")
            plan = {
                "model": base,
                "engine_args": {
                    **ENGINE_ARGS[args.device],
                    "speculative_config": {**SPEC, "model": str(folder)},
                },
                "requests": requests,
            }
            print(f"bench: arctic-hybrid: engine {method} ...", file=sys.stderr, flush=True)
            run = run_engine(method, plan, work, args.device, left)
            result["engines"][method] = {k: v for k, v in run.items() if k != "traces"}
            if "traces" in run:
                result["rows"] += rows_of(method, run["traces"])
                result["engines"][method]["counters"] = run["traces"]
        result["seconds"] = round(time.perf_counter() - started, 1)
        result["complete"] = method == chosen[-1]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1) + "\n")
    for r in result["rows"]:
        print(
            f"{r['trace']:14s} {r['method']:14s} {r['tokens_per_step']:.3f} {r['accept_rate']:.3f} "
            f"match {r['match']}"
        )
    for method, r in result["engines"].items():
        if "error" in r:
            print(f"{method}: {r['error'][-600:]}")
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
