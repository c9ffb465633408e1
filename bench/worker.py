"""Runs inside one engine process: start vLLM's offline ``LLM`` once, run every case, print JSON.

    python -m bench.worker '{"model": DIR, "engine_args": {...}, "cases": [...]}'

The last stdout line starting with ``RESULT `` holds the result. Kept free of timing tricks: each
case warms up once, then is timed with ``time.perf_counter`` around whole ``generate`` calls (which
return only when every token is on the host, so no device synchronisation is missed).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def prompts(n: int, length: int, vocab: int, seed: int) -> list[dict[str, list[int]]]:
    """``n`` random token-id prompts of ``length`` tokens, away from special ids at both ends."""
    rng = np.random.default_rng(seed)
    return [{"prompt_token_ids": rng.integers(1000, vocab - 1000, size=length).tolist()} for _ in range(n)]


def stats(values: list[float]) -> dict[str, Any]:
    median = statistics.median(values)
    return {
        "median": median,
        "min": min(values),
        "max": max(values),
        "spread_rel": (max(values) - min(values)) / median if median else 0.0,
        "values": values,
    }


def run_latency(llm: Any, case: dict[str, Any], vocab: int) -> dict[str, Any]:
    """``num_prompts`` requests decoding together (1 = single-request latency)."""
    from vllm import SamplingParams

    prompt = prompts(case["num_prompts"], case["input_len"], vocab, seed=1)
    first = SamplingParams(max_tokens=1, temperature=0.0, ignore_eos=True)
    full = SamplingParams(max_tokens=case["output_len"], temperature=0.0, ignore_eos=True)
    llm.generate(prompt, full, use_tqdm=False)  # warm-up
    rounds = timed_rounds(llm, prompt, first, full, case)
    return {k: stats(rounds[k]) for k in ("ttft_ms", "e2e_ms", "tpot_ms")}


def timed_rounds(
    llm: Any,
    prompt: Any,
    first: Any,
    full: Any,
    case: dict[str, Any],
    read_steps: Callable[[], int] | None = None,
) -> dict[str, list[float]]:
    """``repeats`` rounds of a 1-token run (TTFT) then the full run (E2E), TPOT from the difference.
    With ``read_steps`` (the engine's step counter) also ``steps`` of each full run and ``step_ms``:
    (E2E - TTFT) / (steps of the full run - steps of the 1-token run)."""
    rounds: dict[str, list[float]] = {"ttft_ms": [], "e2e_ms": [], "tpot_ms": [], "step_ms": [], "steps": []}
    for _ in range(case["repeats"]):
        s0 = read_steps() if read_steps else 0
        t0 = time.perf_counter()
        llm.generate(prompt, first, use_tqdm=False)
        t1 = time.perf_counter()
        s1 = read_steps() if read_steps else 0
        out = llm.generate(prompt, full, use_tqdm=False)
        t2 = time.perf_counter()
        s2 = read_steps() if read_steps else 0
        assert all(len(o.outputs[0].token_ids) == case["output_len"] for o in out)
        rounds["ttft_ms"].append((t1 - t0) * 1e3)
        rounds["e2e_ms"].append((t2 - t1) * 1e3)
        rounds["tpot_ms"].append(((t2 - t1) - (t1 - t0)) * 1e3 / (case["output_len"] - 1))
        if read_steps:
            rounds["steps"].append(float(s2 - s1))
            rounds["step_ms"].append(((t2 - t1) - (t1 - t0)) * 1e3 / max(1, (s2 - s1) - (s1 - s0)))
    return rounds


def run_throughput(llm: Any, case: dict[str, Any], vocab: int) -> dict[str, Any]:
    from vllm import SamplingParams

    batch = prompts(case["num_prompts"], case["input_len"], vocab, seed=2)
    params = SamplingParams(max_tokens=case["output_len"], temperature=0.0, ignore_eos=True)
    # Warm up with the whole batch: a first run at a new batch size is up to 2x slower (measured on
    # the H100: 10.9 s, then 5.7 s, for 256 x 1024/256 on the 8B shape).
    llm.generate(batch, params, use_tqdm=False)
    elapsed, out_tps, total_tps = [], [], []
    for _ in range(case["repeats"]):
        t0 = time.perf_counter()
        outs = llm.generate(batch, params, use_tqdm=False)
        dt = time.perf_counter() - t0
        out_tokens = sum(len(o.outputs[0].token_ids) for o in outs)
        assert out_tokens == case["num_prompts"] * case["output_len"]
        elapsed.append(dt)
        out_tps.append(out_tokens / dt)
        total_tps.append((out_tokens + case["num_prompts"] * case["input_len"]) / dt)
    return {"elapsed_s": stats(elapsed), "output_tok_s": stats(out_tps), "total_tok_s": stats(total_tps)}


def spec_counters(llm: Any) -> dict[str, float]:
    """vLLM's own speculative-decoding counters (``vllm:spec_decode_*``), summed over labels."""
    totals: dict[str, float] = {}
    for metric in llm.get_metrics():
        if metric.name.startswith("vllm:spec_decode_num_") and hasattr(metric, "value"):
            key = metric.name.removeprefix("vllm:spec_decode_")
            totals[key] = totals.get(key, 0.0) + metric.value
    return totals


def run_acceptance(llm: Any, case: dict[str, Any], vocab: int) -> dict[str, Any]:
    """Acceptance of the engine's draft method on real text (real model, greedy, real prompts)."""
    from vllm import SamplingParams

    from bench.texts import acceptance_prompts

    texts = acceptance_prompts()
    params = SamplingParams(max_tokens=case["output_len"], temperature=0.0)
    before = spec_counters(llm)
    outs = llm.generate(texts, params, use_tqdm=False)
    after = spec_counters(llm)
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    drafts = delta.get("num_drafts", 0.0)
    accepted = delta.get("num_accepted_tokens", 0.0)
    return {
        "prompts": len(texts),
        "output_tokens": sum(len(o.outputs[0].token_ids) for o in outs),
        "num_drafts": drafts,
        "num_draft_tokens": delta.get("num_draft_tokens", 0.0),
        "num_accepted_tokens": accepted,
        "accept_rate": accepted / delta["num_draft_tokens"] if delta.get("num_draft_tokens") else 0.0,
        "tokens_per_drafting_step": 1 + accepted / drafts if drafts else 1.0,
    }


def _timer(llm: Any, method: str, **kwargs: Any) -> dict[str, Any]:
    """``bench.drafttimer``'s counters in the (first) worker."""
    out: dict[str, Any] = llm.collective_rpc(method, kwargs=kwargs)[0]
    return out


def _head_counters(llm: Any) -> dict[str, Any] | None:
    """Our draft head's own counters (``arctic_get_state``), or None (another engine)."""
    if os.environ.get("ARCTIC_SERVE_ENABLED") != "1":
        return None
    state = llm.collective_rpc("arctic_get_state", kwargs={"workers": True})[0]
    heads = (state.get("workers") or [{}])[0].get("heads") or {}
    counters: dict[str, Any] | None = heads.get("counters")
    return counters


def run_draft_cost(llm: Any, case: dict[str, Any], vocab: int) -> dict[str, Any]:
    """``num_prompts`` requests decoding together, as ``run_latency``, plus the engine's steps and its
    drafter's own time (``bench.drafttimer``, installed through ``worker_extension_cls``):

    * timed runs (draft timer off): ``step_ms`` = (E2E - TTFT) / (steps of the full run - steps of
      the 1-token run), steps = the worker's ``execute_model`` calls; TPOT as ``run_latency``;
    * one more full run with the drafter timed between device synchronisations: ``draft_ms``
      (per call of ``propose_draft_token_ids``, and per engine step), the spec-decode counters of
      that run (dummy weights: not an acceptance figure) and our head's own counters when present."""
    from vllm import SamplingParams

    installed = _timer(llm, "bench_timer_install")
    prompt = prompts(case["num_prompts"], case["input_len"], vocab, seed=1)
    first = SamplingParams(max_tokens=1, temperature=0.0, ignore_eos=True, detokenize=False)
    full = SamplingParams(max_tokens=case["output_len"], temperature=0.0, ignore_eos=True, detokenize=False)
    llm.generate(prompt, full, use_tqdm=False)  # warm-up (also captures the drafter's graphs)
    rounds = timed_rounds(
        llm, prompt, first, full, case, lambda: int(_timer(llm, "bench_timer_read")["steps"])
    )
    before, spec0, heads0 = _timer(llm, "bench_timer_sync", on=True), spec_counters(llm), _head_counters(llm)
    llm.generate(prompt, full, use_tqdm=False)
    after, spec1, heads1 = _timer(llm, "bench_timer_sync", on=False), spec_counters(llm), _head_counters(llm)
    result: dict[str, Any] = {k: stats(v) for k, v in rounds.items()}
    result["runner"] = installed["runner"]
    calls = after["timed_calls"] - before["timed_calls"]
    probe_steps = after["steps"] - before["steps"]
    if calls:
        per_call = (after["timed_ns"] - before["timed_ns"]) / calls / 1e6
        result["draft_ms"] = {
            "per_call": per_call,
            "per_step": per_call * calls / max(1, probe_steps),
            "calls": calls,
            "steps": probe_steps,
        }
    drafts = {k: spec1.get(k, 0.0) - spec0.get(k, 0.0) for k in spec1}
    if drafts:
        result["spec_counters"] = drafts
    if heads0 is not None and heads1 is not None:
        n = heads1["steps"] - heads0["steps"]
        us = heads1["us_per_step"] * heads1["steps"] - heads0["us_per_step"] * heads0["steps"]
        result["head_counters"] = {
            "steps": n,
            "head_drafts": heads1["head_drafts"] - heads0["head_drafts"],
            "us_per_step": us / max(1, n),
        }
    return result


def run_e2e(llm: Any, case: dict[str, Any], vocab: int) -> dict[str, Any]:
    """The real model end to end: the real prompts one request at a time (greedy), ``repeats``
    rounds. Round 1 is cold for model-free drafters (nothing cached yet); later rounds repeat the
    same requests, as agent loops and edit sessions do. Per round: wall time per output token and the
    engine's own spec-decode counters. Figures are stats over rounds 2.. (the steady state)."""
    from vllm import SamplingParams

    from bench.texts import acceptance_prompts

    texts = acceptance_prompts()
    params = SamplingParams(max_tokens=case["output_len"], temperature=0.0)
    llm.generate(texts[:1], params, use_tqdm=False)  # warm-up (not counted)
    rounds: list[dict[str, Any]] = []
    for _ in range(case["repeats"]):
        before = spec_counters(llm)
        tokens = 0
        t0 = time.perf_counter()
        for text in texts:
            out = llm.generate([text], params, use_tqdm=False)
            tokens += len(out[0].outputs[0].token_ids)
        elapsed = time.perf_counter() - t0
        after = spec_counters(llm)
        delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
        drafts, accepted = delta.get("num_drafts", 0.0), delta.get("num_accepted_tokens", 0.0)
        rounds.append(
            {
                "output_tokens": tokens,
                "ms_per_token": elapsed * 1e3 / tokens,
                "accept_rate": accepted / delta["num_draft_tokens"] if delta.get("num_draft_tokens") else 0.0,
                "tokens_per_drafting_step": 1 + accepted / drafts if drafts else 1.0,
            }
        )
    steady = rounds[1:] or rounds
    return {
        "prompts": len(texts),
        "rounds": rounds,
        "ms_per_token": stats([r["ms_per_token"] for r in steady]),
        "tokens_per_drafting_step": stats([r["tokens_per_drafting_step"] for r in steady]),
    }


def _name(value: Any) -> Any:
    """An enum's name (vLLM's CUDAGraphMode, CompilationMode), anything else as it is."""
    return getattr(value, "name", value)


def engine_settings(config: Any) -> dict[str, Any]:
    """What vLLM made of an engine's arguments (its ``VllmConfig`` after start-up), for the settings
    that decide how a step runs: engines given the same arguments can still differ here (vLLM turns
    asynchronous scheduling off for draft methods it has no asynchronous path for, e.g. ``suffix``,
    which our draft heads run behind), and step times are only comparable with this beside them."""
    sched, model, comp = config.scheduler_config, config.model_config, config.compilation_config
    spec = config.speculative_config
    return {
        "async_scheduling": bool(sched.async_scheduling),
        "max_num_seqs": int(sched.max_num_seqs),
        "max_num_batched_tokens": int(sched.max_num_batched_tokens),
        "enforce_eager": bool(model.enforce_eager),
        "compilation_mode": _name(comp.mode),
        "cudagraph_mode": _name(comp.cudagraph_mode),
        "max_cudagraph_capture_size": comp.max_cudagraph_capture_size,
        "speculative_method": None if spec is None else str(spec.method),
        "num_speculative_tokens": None if spec is None else spec.num_speculative_tokens,
    }


def main() -> None:
    plan = json.loads(sys.argv[1])
    t0 = time.perf_counter()
    from vllm import LLM

    llm = LLM(plan["model"], seed=0, **plan["engine_args"])
    start_s = time.perf_counter() - t0
    vocab = int(llm.llm_engine.model_config.get_vocab_size())
    runners = {
        "latency": run_latency,
        "throughput": run_throughput,
        "acceptance": run_acceptance,
        "e2e": run_e2e,
        "draft-cost": run_draft_cost,
    }
    cases = {case["name"]: runners[case["kind"]](llm, case, vocab) for case in plan["cases"]}
    result: dict[str, Any] = {
        "start_s": start_s,
        "settings": engine_settings(llm.llm_engine.vllm_config),
        "cases": cases,
    }
    if plan["engine_args"].get("disable_log_stats") is False:
        result["spec_counters"] = spec_counters(llm)
    if os.environ.get("ARCTIC_SERVE_ENABLED") == "1":
        # the plugin's view from the engine core and the worker (our suffix drafter's time per step)
        result["arctic_state"] = llm.collective_rpc("arctic_get_state", kwargs={"workers": True})[0]
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
