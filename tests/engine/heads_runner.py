"""Draft heads in a real offline vLLM engine: ``python -m tests.engine.heads_runner REQUEST_JSON``.

REQUEST_JSON: ``{"model": ..., "speculative_config": {...}, "prompts": [...], "max_tokens": N}``.
Prints one ``RESULT {json}`` line: the greedy token ids, vLLM's spec-decode counters for the run,
and the worker's head state (loaded head, drafts by source).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from tests.engine.offline_runner import cpu_llm
from tests.engine.suffix_runner import spec_counters


def main() -> None:
    request = json.loads(sys.argv[1])
    from vllm import SamplingParams

    llm = cpu_llm(request, disable_log_stats=False)
    before = spec_counters(llm)
    outputs = llm.generate(
        request["prompts"], SamplingParams(temperature=0.0, max_tokens=request["max_tokens"])
    )
    after = spec_counters(llm)
    state = llm.collective_rpc("arctic_get_state", kwargs={"workers": True})[0]
    result: dict[str, Any] = {
        "token_ids": [list(o.outputs[0].token_ids) for o in outputs],
        "spec": {k.split(":")[1]: after[k] - before[k] for k in after},
        "heads": state["workers"][0].get("heads"),
        "method": state["speculation"]["method"],
    }
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
