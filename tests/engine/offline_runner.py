"""Run vLLM's offline ``LLM`` in its own process and print one JSON result (used by engine tests).

    python -m tests.engine.offline_runner '{"model": ..., "prompts": [...], "max_tokens": 32,
                                           "speculative_config": null}'

The plugin is enabled or not by ARCTIC_SERVE_ENABLED in the environment, exactly as for users.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def cpu_llm(request: dict[str, Any], **extra: Any) -> Any:
    """vLLM's offline ``LLM`` with the engine tests' CPU settings for ``request["model"]``."""
    from vllm import LLM

    return LLM(
        request["model"],
        dtype="float32",
        enforce_eager=True,
        max_model_len=1024,
        max_num_batched_tokens=512,
        seed=0,
        speculative_config=request.get("speculative_config"),
        **extra,
    )


def main() -> None:
    request = json.loads(sys.argv[1])
    from vllm import SamplingParams
    from vllm.v1.core.sched.scheduler import Scheduler

    from arctic_runtime import patching

    llm = cpu_llm(request)
    outputs = llm.generate(
        request["prompts"], SamplingParams(temperature=0.0, max_tokens=request["max_tokens"])
    )
    result: dict[str, Any] = {
        "texts": [o.outputs[0].text for o in outputs],
        "token_ids": [list(o.outputs[0].token_ids) for o in outputs],
        "front_end": {
            "pid": os.getpid(),
            "patches": patching.applied_targets(),
            "schedule_patched": hasattr(Scheduler.schedule, "__arctic_patch__"),
        },
    }
    try:
        result["engine"] = llm.collective_rpc("arctic_get_state", kwargs={"workers": True})[0]
    except Exception as exc:  # vanilla vLLM: the RPC name is unknown to the workers
        result["engine_error"] = f"{type(exc).__name__}: {exc}"
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
