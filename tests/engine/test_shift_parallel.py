"""Ulysses and Shift Parallelism in a real vLLM engine (CPU build, gloo), on the real SmolLM2.

SmolLM2 has 9 query and 3 KV heads, which split over neither 2 nor 4 ranks, so every layout runs
on a head-padded copy (12 / 4 heads, the extra heads zero). Every layout must give the greedy
tokens of the unpadded model on one rank exactly (so the padding changes no output either), over
22 prompts of 1 to 364 tokens (chunked prefill at 512 batched tokens) with answers of 6 to 34
tokens:

* tensor 2 (vLLM's own tensor parallelism, plugin on);
* ulysses 2 (every step sequence-parallel: chunks of the step's tokens per rank, heads exchanged
  by all-to-all);
* ulysses 2 + shift at 12 tokens: prefill chunks and the first decode steps (22 running requests)
  run sequence-parallel, later decode steps full tensor-parallel, so requests switch modes
  mid-generation; also with suffix decoding, whose verify steps run in both modes.

Log-probabilities of the generated tokens must agree within ``LOGPROB_ATOL``: reductions run in a
different order across ranks (the all-reduce of TP, per-chunk matmuls of SP), float32 throughout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from arctic_runtime.models import head_padded_copy
from tests.engine.conftest import run_parallel
from tests.engine.prompts import PARALLEL_PROMPTS

pytestmark = pytest.mark.engine

#: Nats. Observed differences are ~1e-5 (float32); a wrong head or token order is off by >> 0.1.
LOGPROB_ATOL = 1e-3
SHIFT_THRESHOLD = 12
SUFFIX = {"method": "suffix", "num_speculative_tokens": 8, "suffix_decoding_max_tree_depth": 32}


def ulysses(shift: bool) -> dict[str, Any]:
    parallel: dict[str, Any] = {"ulysses": 2}
    if shift:
        parallel.update(shift=True, shift_threshold=SHIFT_THRESHOLD)
    return {"arctic": {"parallel": parallel}}


LAYOUTS: dict[str, dict[str, Any]] = {
    "tensor2": {"tensor_parallel_size": 2},
    "ulysses2": {"additional_config": ulysses(False)},
    "ulysses2-shift": {"additional_config": ulysses(True)},
    "ulysses2-shift-suffix": {"additional_config": ulysses(True), "speculative_config": SUFFIX},
}


def run(model: Path, **request: Any) -> dict[str, Any]:
    return run_parallel(model, 2 if request else 1, **request)


@pytest.fixture(scope="module")
def padded(smollm2_dir: Path) -> Path:
    return head_padded_copy(smollm2_dir, smollm2_dir.parent / f"{smollm2_dir.name}-heads12", 12, 4)


@pytest.fixture(scope="module", params=list(LAYOUTS))
def layout(request: pytest.FixtureRequest, padded: Path) -> tuple[str, dict[str, Any]]:
    name = str(request.param)
    return name, run(padded, **LAYOUTS[name])


def assert_same_answers(got: dict[str, Any], want: dict[str, Any]) -> None:
    for i, (tokens, expected) in enumerate(zip(got["token_ids"], want["token_ids"], strict=True)):
        assert tokens == expected, (
            f"prompt {i} ({PARALLEL_PROMPTS[i][:40]!r}): {got['texts'][i]!r} != {want['texts'][i]!r}"
        )
    worst = max(
        abs(a - b)
        for got_lp, want_lp in zip(got["logprobs"], want["logprobs"], strict=True)
        for a, b in zip(got_lp, want_lp, strict=True)
    )
    assert worst <= LOGPROB_ATOL, f"log-probabilities differ by up to {worst:.2e}"


def test_the_one_rank_reference_answers_sensibly(smollm2_parallel: dict[str, Any]) -> None:
    # the reference every layout must equal is the real model answering, not an empty run
    assert "Paris" in smollm2_parallel["texts"][1]
    assert all(smollm2_parallel["token_ids"])


def test_every_layout_gives_the_one_rank_answers(
    layout: tuple[str, dict[str, Any]], smollm2_parallel: dict[str, Any]
) -> None:
    name, result = layout
    assert_same_answers(result, smollm2_parallel)
    workers = result["engine"]["workers"]
    assert len(workers) == 2, f"{name}: expected 2 ranks"
    par = result["engine"]["parallel"]
    if name == "tensor2":
        assert par["ulysses"] == 1 and not any("parallel" in w for w in workers)
        return
    # every rank knows its place: tensor rank 0, sequence ranks 0 and 1, both models loaded
    coords = sorted((w["parallel"]["tensor_rank"], w["parallel"]["sequence_rank"]) for w in workers)
    assert coords == [(0, 0), (0, 1)]
    assert par["tensor"] == 1 and par["ulysses"] == 2
    steps, tokens = par["steps"], par["tokens"]
    if name == "ulysses2":
        assert steps["tp"] == 0 and steps["sp"] > 0 and par["shift_threshold"] is None
        assert all(w["parallel"]["weights_bytes"]["shift"] == 0 for w in workers)
        return
    # shift: both modes ran; every step of <= 12 tokens in tensor mode, so decode steps of the full
    # batch (22 requests) ran in sequence mode and the same requests later in tensor mode
    assert steps["sp"] > 0 and steps["tp"] > 0, steps
    assert tokens["tp"] <= SHIFT_THRESHOLD * steps["tp"] < tokens["sp"]
    assert par["shift_threshold"] == SHIFT_THRESHOLD
    assert all(w["parallel"]["weights_bytes"]["shift"] > 0 for w in workers)
    if name.endswith("suffix"):
        # drafts were verified in steps of both modes, and accepted
        assert par["draft_steps"]["sp"] > 0 and par["draft_steps"]["tp"] > 0, par["draft_steps"]
        assert result["spec_decode"]["vllm:spec_decode_num_accepted_tokens"] > 0
