"""Our suffix decoding behind vLLM's ``method: suffix``, in a real engine with the real SmolLM2 weights.

One engine process runs every scenario (``suffix_runner``); the tests below read its result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.engine.conftest import run_module

pytestmark = pytest.mark.engine

SPEC = {"method": "suffix", "num_speculative_tokens": 8, "suffix_decoding_max_tree_depth": 32}


@pytest.fixture(scope="module")
def suffix_run(smollm2_dir: Path) -> dict[str, Any]:
    request = {"model": str(smollm2_dir), "speculative_config": SPEC}
    return run_module("tests.engine.suffix_runner", request, enabled=True, timeout=900)


def test_our_implementation_serves_method_suffix(suffix_run: dict[str, Any]) -> None:
    state = suffix_run["suffix_state_start"]
    assert state["backend"] in {"native", "python"}
    assert state["config"]["max_depth"] == 32 and state["config"]["max_spec_tokens"] == 8
    # vLLM's own defaults for the keys the user did not set
    assert state["config"]["max_cached_requests"] == 10000 and state["config"]["min_token_prob"] == 0.1


def test_greedy_outputs_are_identical_to_no_speculation(
    suffix_run: dict[str, Any], vanilla: dict[str, Any]
) -> None:
    assert suffix_run["standard"] == vanilla["token_ids"]


def test_acceptance_climbs_with_repetition_and_ends_above_0_8(suffix_run: dict[str, Any]) -> None:
    rounds = suffix_run["rounds"]
    rates = [r["spec_decode_num_accepted_tokens"] / max(1, r["spec_decode_num_draft_tokens"]) for r in rounds]
    assert all(r["spec_decode_num_draft_tokens"] > 0 for r in rounds[1:]), rounds
    assert rates[-1] > 0.8 and rates[-1] > rates[0], rates
    # Fewer engine steps per output token once the responses are cached: drafts carry the output.
    assert rounds[-1]["spec_decode_num_accepted_tokens"] > rounds[-1]["output_tokens"] / 2, rounds[-1]
    # and speculation never changed what greedy decoding says
    assert all(r["token_ids"] == rounds[0]["token_ids"] for r in rounds)


def test_edge_cases(suffix_run: dict[str, Any]) -> None:
    edge = suffix_run["edge"]
    assert len(edge["max_tokens_1"]) == 1
    assert edge["stop"]["finish_reason"] == "stop" and " 12" not in edge["stop"]["text"]
    # a 1000-token prompt in a 1024-token context: decoding (and drafting) stops at the limit
    assert edge["full_context"] == {"num_tokens": 24, "finish_reason": "length"}
    assert len(edge["short_prompt"]) == 8
    assert len(edge["n2"]) == 2 and all(len(c) == 24 for c in edge["n2"])


def test_aborted_request_frees_its_tree(suffix_run: dict[str, Any]) -> None:
    before, after = suffix_run["edge"]["before_abort"], suffix_run["edge"]["after_abort"]
    assert before["active_requests"] == 2
    assert after["active_requests"] == 1
    assert after["memory"]["local_trees"] == 1


def test_sampled_answers_are_drafted_and_verified(suffix_run: dict[str, Any]) -> None:
    """200 answers sampled at temperature 1 (prompts.SAMPLE): drafts copied from the prompt go through
    vLLM's rejection sampler, which accepts some and rejects some (a sampled token is accepted with
    the target model's probability, not because it was drafted). Whether the answers follow vanilla
    vLLM's distribution is measured by ``python -m bench.sampling`` (docs/benchmarks.md): on the
    H100 they do; on CPU, vLLM's own n-gram drafts shift it as much as ours do."""
    samples, spec = suffix_run["samples"], suffix_run["sample_spec"]
    assert len(samples) == 200 and all(len(s) == 6 for s in samples)
    assert len({tuple(s) for s in samples}) > 20  # sampled, not one greedy answer 200 times
    assert spec["spec_decode_num_draft_tokens"] > 100, spec
    assert 0 < spec["spec_decode_num_accepted_tokens"] < spec["spec_decode_num_draft_tokens"], spec
