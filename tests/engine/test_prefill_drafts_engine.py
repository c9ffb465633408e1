"""``drafts_in_prefill_steps: false`` in a real engine (vLLM's CPU build, the real SmolLM2 weights).

One engine (``prefill_drafts_runner``): n-gram drafting, two request slots, five prompts, one of
them longer than a step's token budget. With the setting off, greedy outputs are those of the same
engine with drafting off; no step that scheduled prefill work verified drafts, decode-only steps
did; and the prediction made before each step (the step mode ``prefill``) matched what vLLM then
scheduled, step for step. The same two runs check the decode-step timings (``decode_steps``):
the reference run times decode steps without drafts only, the drafting run with drafts too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from arctic_runtime.contract import DECODE_BATCH_BUCKETS
from tests.engine.conftest import run_module
from tests.engine.prefill_drafts_runner import MAX_NUM_SEQS, SPEC
from tests.engine.prompts import PROMPTS

pytestmark = pytest.mark.engine

#: about 630 tokens: prefilled in two chunks at 512 batched tokens, while another request decodes
LONG_PROMPT = "The cat sat on the mat. " * 90
PREFILL_PROMPTS = [PROMPTS[1], LONG_PROMPT, PROMPTS[4], PROMPTS[2], PROMPTS[3]]


@pytest.fixture(scope="module")
def prefill_run(smollm2_dir: Path) -> dict[str, Any]:
    request = {"model": str(smollm2_dir), "prompts": PREFILL_PROMPTS, "max_tokens": 24}
    return run_module("tests.engine.prefill_drafts_runner", request, enabled=True)


def delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """Counters of the second run only (the engine's counters are cumulative)."""
    out: dict[str, Any] = {}
    for key, value in after.items():
        out[key] = delta(value, before[key]) if isinstance(value, dict) else value - before[key]
    return out


def test_no_drafts_in_prefill_steps_is_lossless_and_drops_drafts_only_there(
    prefill_run: dict[str, Any],
) -> None:
    reference, drafting = prefill_run["reference"], prefill_run["drafting"]
    assert drafting["state"]["drafts_in_prefill_steps"] is False
    assert reference["prompt_tokens"][1] > 512  # the long prompt is chunked
    # lossless: the same greedy tokens as with drafting off, every request its 24 tokens
    assert drafting["token_ids"] == reference["token_ids"]
    assert all(len(t) == 24 for t in drafting["token_ids"])

    counters = delta(drafting["state"]["counters"], reference["state"]["counters"])
    phases = counters["phase_steps"]
    # steps that scheduled prefill work verified no drafts ...
    assert phases["prefill"]["on"] == 0 and phases["prefill"]["off"] > 0, counters
    # ... while decode-only steps did, with a full batch and a queue too
    assert phases["decode"]["on"] > 0, counters
    # drafts were really dropped for prefill steps, and only there: every step the hook predicted to
    # carry prefill did, and every step that carried prefill was predicted
    assert counters["steps"]["prefill"] == phases["prefill"]["off"], counters
    assert counters["request_steps_dropped"] > 0, counters
    assert counters["steps"]["soft_capped"] == counters["steps"]["hard_capped"] == 0, counters


def counted_steps(decode_steps: dict[str, dict[str, dict[str, Any]]], state: str) -> int:
    return sum(states[state]["steps"] for states in decode_steps.values())


def test_decode_steps_are_timed_by_batch_and_drafting(prefill_run: dict[str, Any]) -> None:
    reference = prefill_run["reference"]["state"]["counters"]
    drafting = delta(prefill_run["drafting"]["state"]["counters"], reference)
    # the reference run (hard cap 0): decode steps timed, none verified drafts
    assert counted_steps(reference["decode_steps"], "off") > 0, reference
    assert counted_steps(reference["decode_steps"], "on") == 0, reference
    # the drafting run: decode steps that verified drafts are timed
    assert counted_steps(drafting["decode_steps"], "on") > 0, drafting
    k = SPEC["num_speculative_tokens"]
    for counters in (reference, drafting):
        decode = counters["decode_steps"]
        assert set(decode) == {str(b) for b in DECODE_BATCH_BUCKETS}
        # only decode-only steps of a busy engine count, so never more than the decode steps the
        # scheduler hook saw; here exactly those, with or without drafts alike: each run is one
        # generate() call whose requests queue for the two slots, so the engine idles only after
        # a run's last output, and the next run's first step admits requests (not decode-only)
        for state in ("on", "off"):
            assert counted_steps(decode, state) == counters["phase_steps"]["decode"][state], counters
        for lower, bucket in zip((0, *DECODE_BATCH_BUCKETS), DECODE_BATCH_BUCKETS, strict=False):
            for state, totals in decode[str(bucket)].items():
                steps = totals["steps"]
                if bucket > MAX_NUM_SEQS or steps == 0:
                    assert totals == {
                        "steps": 0, "seconds": 0.0, "requests": 0, "drafting": 0, "draft_tokens": 0
                    }, (bucket, state, totals)  # fmt: skip
                    continue
                assert 0 < totals["seconds"] < 10 * steps, (bucket, state, totals)
                assert lower * steps < totals["requests"] <= bucket * steps, (bucket, state, totals)
                assert totals["drafting"] <= totals["requests"], (bucket, state, totals)
                assert totals["draft_tokens"] <= k * totals["drafting"], (bucket, state, totals)
                if state == "on":
                    assert totals["drafting"] >= steps, (bucket, state, totals)
                else:
                    assert totals["drafting"] == totals["draft_tokens"] == 0, (bucket, state, totals)
