"""``drafts_in_prefill_steps: false`` in a real engine (vLLM's CPU build, the real SmolLM2 weights).

One engine (``prefill_drafts_runner``): n-gram drafting, two request slots, five prompts, one of
them longer than a step's token budget. With the setting off, greedy outputs are those of the same
engine with drafting off; no step that scheduled prefill work verified drafts, decode-only steps
did; and the prediction made before each step (the step mode ``prefill``) matched what vLLM then
scheduled, step for step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.engine.conftest import run_module
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
