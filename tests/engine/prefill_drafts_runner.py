"""One offline engine with ``drafts_in_prefill_steps`` off; prints one JSON result (engine test).

    python -m tests.engine.prefill_drafts_runner '{"model": ..., "prompts": [...], "max_tokens": 24}'

n-gram drafting, at most 2 running requests, so that requests wait for a slot (decode steps with a
full batch and a queue) and are admitted while others decode (prefill steps beside drafting
requests); a prompt longer than the 512-token step budget is prefilled in two chunks while another
request decodes. The same prompts run twice in the same engine: first with the hard cap at 0
(nobody drafts: the greedy reference), then with no cap (drafting, except in prefill steps). The
speculation counters are read after each run.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from tests.engine.offline_runner import cpu_llm

SPEC = {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 4, "prompt_lookup_min": 2}
ADDITIONAL = {"arctic": {"speculation": {"drafts_in_prefill_steps": False}}}
MAX_NUM_SEQS = 2


def main() -> None:
    request = json.loads(sys.argv[1])
    from vllm import SamplingParams

    llm = cpu_llm(
        {**request, "speculative_config": SPEC}, additional_config=ADDITIONAL, max_num_seqs=MAX_NUM_SEQS
    )
    params = SamplingParams(temperature=0.0, max_tokens=request["max_tokens"], ignore_eos=True)

    def run() -> dict[str, Any]:
        outputs = llm.generate(request["prompts"], params, use_tqdm=False)
        state = llm.collective_rpc("arctic_get_state")[0]["speculation"]
        return {
            "token_ids": [list(o.outputs[0].token_ids) for o in outputs],
            "prompt_tokens": [len(o.prompt_token_ids or []) for o in outputs],
            "state": state,
        }

    llm.collective_rpc("arctic_set_speculation_cap", kwargs={"soft_cap": 0, "hard_cap": 0})
    reference = run()
    llm.collective_rpc("arctic_set_speculation_cap", kwargs={"soft_cap": None, "hard_cap": None})
    drafting = run()
    print("RESULT " + json.dumps({"reference": reference, "drafting": drafting}), flush=True)


if __name__ == "__main__":
    main()
