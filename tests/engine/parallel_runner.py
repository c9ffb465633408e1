"""Run vLLM's offline ``LLM`` with a parallel layout in its own process; print one JSON result.

    python -m tests.engine.parallel_runner '{"model": ..., "prompts": [...], "max_tokens": [...],
        "tensor_parallel_size": 1, "additional_config": {...}, "speculative_config": null}'

Greedy decoding with the top-1 log-probability of every generated token, so callers compare tokens
exactly and log-probabilities within a tolerance. Used by tests/engine/test_shift_parallel.py.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any


def main() -> None:
    request = json.loads(sys.argv[1])
    from vllm import LLM, SamplingParams

    started = time.perf_counter()
    # The CPU engine tests' settings; ``engine_args`` overrides them (bench.shift exact on a GPU).
    engine_args: dict[str, Any] = {
        "dtype": "float32",
        "enforce_eager": True,
        "max_model_len": 1024,
        "max_num_batched_tokens": 512,
        "seed": 0,
        "disable_log_stats": False,  # for the spec-decode counters (llm.get_metrics)
        "tensor_parallel_size": request.get("tensor_parallel_size", 1),
        "additional_config": request.get("additional_config"),
        "speculative_config": request.get("speculative_config"),
        **request.get("engine_args", {}),
    }
    llm = LLM(request["model"], **engine_args)
    loaded = time.perf_counter()
    params = [SamplingParams(temperature=0.0, max_tokens=n, logprobs=0) for n in request["max_tokens"]]
    outputs = llm.generate(request["prompts"], params)
    result: dict[str, Any] = {
        "token_ids": [list(o.outputs[0].token_ids) for o in outputs],
        "prompt_token_ids": [list(o.prompt_token_ids or []) for o in outputs],
        "texts": [o.outputs[0].text for o in outputs],
        "logprobs": [
            [lp[t].logprob for t, lp in zip(o.outputs[0].token_ids, o.outputs[0].logprobs, strict=True)]
            for o in outputs
        ],
        "compilation": {
            "mode": int(llm.llm_engine.vllm_config.compilation_config.mode),
            "backend": llm.llm_engine.vllm_config.compilation_config.backend,
        },
        "load_s": loaded - started,
        "generate_s": time.perf_counter() - loaded,
    }
    try:
        result["engine"] = llm.collective_rpc("arctic_get_state", kwargs={"workers": True})[0]
    except Exception as exc:  # vanilla vLLM
        result["engine_error"] = f"{type(exc).__name__}: {exc}"
    metrics = {
        m.name: getattr(m, "value", None) for m in llm.get_metrics() if m.name.startswith("vllm:spec_decode")
    }
    result["spec_decode"] = metrics
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
