"""Suffix decoding in a real offline vLLM engine: every scenario the suffix tests check, in one process.

    python -m tests.engine.suffix_runner '{"model": ..., "speculative_config": {...}}'

Prints one ``RESULT {json}`` line. Scenarios (in this order, one engine):

* ``standard``: the shared engine-test prompts, greedy (compared with vanilla vLLM for losslessness);
* ``rounds``: the same edit-style prompts sent again and again, with vLLM's own spec-decode counters
  read after each round (acceptance must climb as the global tree learns the responses);
* ``edge``: max_tokens=1, a stop string, a prompt that fills the context, a prompt shorter than any
  match, n=2 sampling; and an aborted request (LLMEngine stepped by hand) with the worker's suffix
  state read before and after;
* ``samples``: ``prompts.SAMPLE``'s sampled answers (200 of them), with the spec-decode counters of
  that call (compared with vanilla's samples: the same distribution).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from tests.engine.offline_runner import cpu_llm
from tests.engine.prompts import MAX_TOKENS, PROMPTS, SAMPLE, sample_params

EDIT_PROMPTS = [
    "Rename the variable x to total in this code:\n\ndef f(x):\n    x = x + 1\n    return x * 2\n",
    "List the planets of the solar system, one per line, in order from the Sun.",
    "Copy this sentence exactly three times: The quick brown fox jumps over the lazy dog.",
]
ROUNDS = 4
ROUND_TOKENS = 48


def spec_counters(llm: Any) -> dict[str, int]:
    wanted = {"vllm:spec_decode_num_drafts", "vllm:spec_decode_num_draft_tokens"}
    wanted.add("vllm:spec_decode_num_accepted_tokens")
    out = {name: 0 for name in wanted}
    for metric in llm.get_metrics():
        if metric.name in wanted:
            out[metric.name] += int(metric.value)
    return out


def suffix_state(llm: Any) -> dict[str, Any]:
    state: dict[str, Any] = llm.collective_rpc("arctic_get_state", kwargs={"workers": True})[0]
    worker: dict[str, Any] = state["workers"][0]["suffix"]
    return worker


def main() -> None:
    request = json.loads(sys.argv[1])
    from vllm import SamplingParams

    llm = cpu_llm(request, disable_log_stats=False)
    greedy = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS)
    result: dict[str, Any] = {"suffix_state_start": suffix_state(llm)}

    outputs = llm.generate(PROMPTS, greedy)
    result["standard"] = [list(o.outputs[0].token_ids) for o in outputs]

    rounds = []
    before = spec_counters(llm)
    for _ in range(ROUNDS):
        outs = llm.generate(EDIT_PROMPTS, SamplingParams(temperature=0.0, max_tokens=ROUND_TOKENS))
        after = spec_counters(llm)
        delta = {k.split(":")[1]: after[k] - before[k] for k in after}
        delta["output_tokens"] = sum(len(o.outputs[0].token_ids) for o in outs)
        delta["token_ids"] = [list(o.outputs[0].token_ids) for o in outs]  # type: ignore[assignment]
        rounds.append(delta)
        before = after
    result["rounds"] = rounds

    edge: dict[str, Any] = {}
    one = llm.generate([PROMPTS[1]], SamplingParams(temperature=0.0, max_tokens=1))[0]
    edge["max_tokens_1"] = list(one.outputs[0].token_ids)
    stop = llm.generate([PROMPTS[1]], SamplingParams(temperature=0.0, max_tokens=40, stop=[" 12"]))[0]
    edge["stop"] = {"text": stop.outputs[0].text, "finish_reason": stop.outputs[0].finish_reason}
    long_prompt = {"prompt_token_ids": [(i % 50) + 1000 for i in range(1000)]}
    full = llm.generate([long_prompt], SamplingParams(temperature=0.0, max_tokens=100))[0]
    edge["full_context"] = {
        "num_tokens": len(full.outputs[0].token_ids),
        "finish_reason": full.outputs[0].finish_reason,
    }
    short = llm.generate(["Hi"], SamplingParams(temperature=0.0, max_tokens=8))[0]
    edge["short_prompt"] = list(short.outputs[0].token_ids)
    # ignore_eos: a sampled answer may end early (CPU float reductions vary between runs, so even a
    # seeded sample can draw EOS); what is checked is that both samples run through drafting whole
    sampled = SamplingParams(temperature=0.8, seed=1, n=2, max_tokens=24, ignore_eos=True)
    pair = llm.generate([PROMPTS[2]], sampled)[0]
    edge["n2"] = [list(c.token_ids) for c in pair.outputs]

    # SAMPLE's answers (vanilla draws them too): the distribution must not change with drafting
    before = spec_counters(llm)
    drawn = llm.generate([str(SAMPLE["prompt"])], sample_params())[0]
    after = spec_counters(llm)
    result["samples"] = [list(c.token_ids) for c in drawn.outputs]
    result["sample_spec"] = {k.split(":")[1]: after[k] - before[k] for k in after}

    engine = llm.llm_engine
    params = SamplingParams(temperature=0.0, max_tokens=200, ignore_eos=True)
    engine.add_request("keep", PROMPTS[3], params)
    engine.add_request("abort", PROMPTS[4], params)
    for _ in range(4):
        engine.step()
    edge["before_abort"] = suffix_state(llm)
    engine.abort_request(["abort"])
    for _ in range(3):
        engine.step()
    edge["after_abort"] = suffix_state(llm)
    engine.abort_request(["keep"])
    result["edge"] = edge
    result["suffix_state_end"] = suffix_state(llm)
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
