"""Draft heads in a real offline vLLM engine: ``python -m tests.engine.heads_runner REQUEST_JSON``.

REQUEST_JSON: ``{"model": ..., "speculative_config": {...}, "prompts": [...], "max_tokens": N,
"bad": [speculative_config, ...], "cap": bool}``. Prints one ``RESULT {json}`` line:

* ``bad``: for each bad config, the first line of the error ``LLM(...)`` raised (at startup);
* ``token_ids``: the greedy answers, with vLLM's spec-decode counters of that call (``spec``);
* ``capped`` (when ``cap``): the same prompts again under a hard cap of 1 (nobody drafts), with
  their counters;
* ``heads``: the worker's head state (loaded head, drafts by source: head or suffix);
* ``async_scheduling``: whether the engine scheduled asynchronously. With ``keep_async_decision``
  the CPU engine keeps vLLM's own decision (see ``keep_the_async_decision_on_cpu``).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from tests.engine.offline_runner import cpu_llm
from tests.engine.suffix_runner import spec_counters


def first_error_line(request: dict[str, Any], spec: dict[str, Any]) -> str:
    try:
        cpu_llm({**request, "speculative_config": spec})
    except Exception as exc:  # the error a user sees
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return "no error"


def keep_the_async_decision_on_cpu() -> None:
    """vLLM's CPU platform turns asynchronous scheduling off after vLLM has decided it (it is
    "not required on CPU"); keep vLLM's decision instead, so this CPU engine runs the runner code
    a GPU runs (the CPU runner is the GPU runner's subclass). The runner's two CUDA stream calls on
    that path (copying counts to the host on a side stream) become plain copies here. Needs the
    engine in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0)."""
    import contextlib

    import torch
    from vllm.platforms import cpu

    original = cpu.CpuPlatform.check_and_update_config.__func__

    def check_and_update_config(cls: Any, vllm_config: Any) -> None:
        decided = vllm_config.scheduler_config.async_scheduling
        original(cls, vllm_config)
        vllm_config.scheduler_config.async_scheduling = decided

    cpu.CpuPlatform.check_and_update_config = classmethod(check_and_update_config)
    torch.cuda.current_stream = lambda *args, **kwargs: None
    torch.cuda.stream = lambda stream: contextlib.nullcontext()


def main() -> None:
    request = json.loads(sys.argv[1])
    if request.get("keep_async_decision"):
        keep_the_async_decision_on_cpu()
    from vllm import SamplingParams

    result: dict[str, Any] = {"bad": [first_error_line(request, spec) for spec in request.get("bad", [])]}
    llm = cpu_llm(request, disable_log_stats=False)
    greedy = SamplingParams(temperature=0.0, max_tokens=request["max_tokens"])

    def run() -> tuple[list[list[int]], dict[str, int]]:
        before = spec_counters(llm)
        outputs = llm.generate(request["prompts"], greedy)
        after = spec_counters(llm)
        return [list(o.outputs[0].token_ids) for o in outputs], {
            k.split(":")[1]: after[k] - before[k] for k in after
        }

    result["token_ids"], result["spec"] = run()
    if request.get("cap"):
        llm.collective_rpc("arctic_set_speculation_cap", kwargs={"soft_cap": None, "hard_cap": 1})
        result["capped_token_ids"], result["capped_spec"] = run()
    state = llm.collective_rpc("arctic_get_state", kwargs={"workers": True})[0]
    result["heads"] = state["workers"][0].get("heads")
    result["method"] = state["speculation"]["method"]
    result["async_scheduling"] = bool(llm.llm_engine.vllm_config.scheduler_config.async_scheduling)
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
