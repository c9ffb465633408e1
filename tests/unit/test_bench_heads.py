"""The draft-head GPU measurements' pure parts: the implied speedup, the head placeholder, the rows
the hybrid run writes, what Arctic's loader is told about our checkpoint, and the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from bench.arctic_hybrid import arctic_loader_verdict, first_difference, rows_of
from bench.headcost import (
    ACCEPT_FILE,
    VERIFY_FILE,
    head_config_for,
    head_tokens_per_step,
    implied,
    implied_section,
    verify_ratios,
)
from bench.report import render
from bench.run import with_head
from bench.suites import ENGINES, HEAD_COST_CASES, SUITES

REPO = Path(__file__).resolve().parents[2]


def stat(median: float) -> dict[str, Any]:
    return {"median": median, "min": median, "max": median, "spread_rel": 0.0, "values": [median]}


def case(step: float, draft: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"step_ms": stat(step), "tpot_ms": stat(step), "ttft_ms": stat(1.0)}
    if draft is not None:
        out["draft_ms"] = {"per_call": draft, "per_step": draft, "calls": 10, "steps": 10}
    return out


def test_implied_speedup_direct_and_composed() -> None:
    cases = [{"name": "batch-1", "num_prompts": 1}, {"name": "batch-64", "num_prompts": 64}]
    engines = {
        "vanilla": {"cases": {"batch-1": case(5.0), "batch-64": case(6.0)}},
        "ours": {"cases": {"batch-1": case(7.0, draft=0.5), "batch-64": case(12.0, draft=1.2)}},
        "arctic": {"error": "rc=1: boom"},
    }
    out = implied(engines, cases, {"mixed": 1.4}, {1: 1.3})
    assert set(out) == {"ours"}  # an engine that did not run is left out
    one = out["ours"]["batch-1"]
    assert one["direct"]["mixed"] == pytest.approx(1.4 * 5.0 / 7.0)
    assert one["composed"]["mixed"] == pytest.approx(1.4 / (1.3 + 0.5 / 5.0))
    assert one["draft_ratio"] == pytest.approx(0.1) and one["step_ratio"] == pytest.approx(1.4)
    assert "composed" not in out["ours"]["batch-64"]  # no verification cost at batch 64 given


def test_implied_reads_the_committed_acceptance_and_verify_runs() -> None:
    results = REPO / "bench" / "results"
    tau = head_tokens_per_step(json.loads((results / ACCEPT_FILE).read_text()))
    assert set(tau) == {"heldout-chat", "heldout-code", "edit", "mixed"}
    assert tau["mixed"] == pytest.approx(1.4349)
    verify = verify_ratios(json.loads((results / VERIFY_FILE).read_text()))
    assert {1, 16, 64} <= set(verify) and verify[1] == pytest.approx(1.3666, abs=1e-4)
    engines = {
        "vanilla": {"cases": {"batch-1-128-128": case(5.0)}},
        "ours": {"cases": {"batch-1-128-128": case(7.0, draft=0.5)}},
    }
    section = implied_section(engines, [{"name": "batch-1-128-128", "num_prompts": 1}], results)
    assert section["sources"] == {"tau": ACCEPT_FILE, "verify_k3_ratio": VERIFY_FILE}
    assert section["engines"]["ours"]["batch-1-128-128"]["composed"]["mixed"] == pytest.approx(
        1.4349 / (verify[1] + 0.1)
    )
    assert "error" in implied_section(engines, [], Path("/nonexistent"))


def test_head_engines_share_one_speculator_folder() -> None:
    suite = SUITES["heads-8b"]
    assert suite.head == "lstm" and suite.cases == HEAD_COST_CASES
    assert [c.num_prompts for c in suite.cases] == [1, 16, 64]
    assert suite.engine_args["worker_extension_cls"] == "bench.drafttimer.DraftTimer"
    ours = with_head({**suite.engine_args, **ENGINES["arctic-serve-head"].engine_args}, "/h")
    arctic = with_head({**suite.engine_args, **ENGINES["arctic-inference-head"].engine_args}, "/h")
    assert (
        ours["speculative_config"]
        == arctic["speculative_config"]
        == {
            "method": "arctic",
            "model": "/h",
            "num_speculative_tokens": 3,
        }
    )
    assert ENGINES["arctic-inference-head"].requires == "arctic_inference"
    with pytest.raises(ValueError, match=r"Suite\.head"):
        with_head(ENGINES["arctic-serve-head"].engine_args, None)
    plain = {"dtype": "bfloat16"}
    assert with_head(plain, None) is plain


def test_the_sync_suite_differs_from_heads_8b_only_in_arctics_scheduling() -> None:
    """heads-8b-sync: the same model, cases, engine arguments and speculator as heads-8b, with
    Arctic's proposer told to schedule synchronously, as vLLM schedules ours (method suffix)."""
    sync, base = SUITES["heads-8b-sync"], SUITES["heads-8b"]
    assert (sync.model, sync.cases, sync.engine_args, sync.head) == (
        base.model,
        base.cases,
        base.engine_args,
        base.head,
    )
    assert sync.engines == ("vanilla", "arctic-serve-head", "arctic-inference-head-sync")
    arctic, arctic_sync = ENGINES["arctic-inference-head"], ENGINES["arctic-inference-head-sync"]
    assert arctic_sync.env == arctic.env and arctic_sync.requires == arctic.requires
    assert arctic_sync.engine_args == {**arctic.engine_args, "async_scheduling": False}
    script = (REPO / "bench" / "gpu" / "heads_bench.sh").read_text()
    assert (
        "sync) export BENCH_BUDGET_S=${BENCH_BUDGET_S:-480}; exec bash bench/gpu/host.sh heads-8b-sync ;;"
        in script
    )


def test_engine_settings_are_what_vllm_made_of_the_arguments() -> None:
    from types import SimpleNamespace

    from bench.worker import engine_settings

    mode = SimpleNamespace(name="FULL_AND_PIECEWISE")
    config = SimpleNamespace(
        scheduler_config=SimpleNamespace(
            async_scheduling=False, max_num_seqs=256, max_num_batched_tokens=8192
        ),
        model_config=SimpleNamespace(enforce_eager=False),
        compilation_config=SimpleNamespace(
            mode=SimpleNamespace(name="VLLM_COMPILE"), cudagraph_mode=mode, max_cudagraph_capture_size=512
        ),
        speculative_config=SimpleNamespace(method="suffix", num_speculative_tokens=3),
    )
    assert engine_settings(config) == {
        "async_scheduling": False,
        "max_num_seqs": 256,
        "max_num_batched_tokens": 8192,
        "enforce_eager": False,
        "compilation_mode": "VLLM_COMPILE",
        "cudagraph_mode": "FULL_AND_PIECEWISE",
        "max_cudagraph_capture_size": 512,
        "speculative_method": "suffix",
        "num_speculative_tokens": 3,
    }
    config.speculative_config = None
    assert engine_settings(config)["speculative_method"] is None


def test_the_8b_head_has_the_8b_shape() -> None:
    from bench.suites import llama_8b_config

    config = head_config_for(llama_8b_config())
    assert (config.kind, config.n_predict, config.input_hidden_dim, config.vocab_size) == (
        "lstm",
        3,
        4096,
        128256,
    )
    assert not config.tie_base_embeddings


def test_rows_count_steps_from_the_engine_and_sum_to_mixed() -> None:
    per_trace = {
        # 2 requests, 48 tokens (2 from prefill), 61 accepted (some past max_tokens), 12 engine steps
        "edit": {
            "num_drafts": 10.0,
            "num_draft_tokens": 69.0,
            "num_accepted_tokens": 61.0,
            "requests": 2,
            "output_tokens": 48,
            "matched": 2,
            "engine_steps": 12,
        },
        "heldout-chat": {
            "num_drafts": 34.0,
            "num_draft_tokens": 102.0,
            "num_accepted_tokens": 12.0,
            "requests": 2,
            "output_tokens": 48,
            "matched": 1,
            "engine_steps": 36,
        },
    }
    rows = {r["trace"]: r for r in rows_of("arctic-hybrid", per_trace)}
    edit = rows["edit"]
    assert (edit["tokens"], edit["steps"], edit["tokens_per_step"]) == (46, 10, 4.6)
    assert edit["steps_from_counters"] == -15  # why the counters alone do not give the steps
    assert rows["mixed"]["steps"] == 44 and rows["mixed"]["tokens"] == 92 and rows["mixed"]["match"] == 0.75
    assert {r["method"] for r in rows.values()} == {"arctic-hybrid"}
    assert all(r["part"] == "heldout" and r["head"] == "lstm" for r in rows.values())


def test_first_difference_names_where_an_answer_parts_from_the_trace() -> None:
    assert first_difference([5, 6, 7], [5, 6, 7]) is None
    assert first_difference([9, 6, 7], [5, 6, 7]) == 0
    assert first_difference([5, 6, 8], [5, 6, 7]) == 2
    # an output cut short (or running on) differs where the shorter one ends
    assert first_difference([5, 6], [5, 6, 7]) == 2
    assert first_difference([5, 6, 7, 1], [5, 6, 7]) == 3
    assert first_difference([], []) is None


def test_arctic_is_told_why_our_checkpoint_needs_its_layout(tmp_path: Path) -> None:
    from arctic_runtime.heads.config import HeadConfig
    from arctic_runtime.heads.model import DraftHead, save_arctic_layout

    verdict = arctic_loader_verdict(REPO / "models" / "speculators" / "smollm2-135m-lstm")
    assert "KeyError: 'forget_proj.0.weight'" in verdict
    assert "forget_emb.0.weight, head.0.weight" in verdict
    config = HeadConfig("lstm", 3, 8, 8, 8, 8, 20, True, True)
    head = DraftHead(config)
    head.init_weights(torch.Generator().manual_seed(0))
    assert arctic_loader_verdict(save_arctic_layout(head, tmp_path)) == "reads it as it is"


def test_report_renders_a_partial_draft_cost_run(tmp_path: Path) -> None:
    cases = [
        {"name": "batch-1-128-128", "kind": "draft-cost", "input_len": 128, "output_len": 128},
    ]
    cases[0].update(num_prompts=1, repeats=3)
    engines = {
        "vanilla": {
            "start_s": 60.0,
            "settings": {"async_scheduling": True},
            "cases": {"batch-1-128-128": case(5.0)},
        },
        "arctic-serve-head": {
            "start_s": 70.0,
            "settings": {"async_scheduling": False},
            "cases": {"batch-1-128-128": case(7.0, draft=0.5)},
        },
        "arctic-inference-head": {"error": "timed out after 200 s: capturing"},
    }
    results = tmp_path / "results"
    results.mkdir()
    run = {
        "suite": "heads-8b",
        "description": "d",
        "created": "2026-12-04T00:00:00Z",
        "environment": {"gpu": "H200", "vllm": "0.26.0", "commit": "abc"},
        "config": {"cases": cases, "online": []},
        "engines": engines,
        "ratios": {"arctic-serve-head/vanilla": {"batch-1-128-128.step_ms": 1.4}},
        "duration_s": 300.0,
        "implied": implied_section(engines, cases, REPO / "bench" / "results"),
        "complete": True,
    }
    (results / "heads-8b-20261204T000000Z.json").write_text(json.dumps(run))
    text = render(results, tmp_path / "docs", intro=None)
    # each engine's scheduling as vLLM settled it (bench.worker.engine_settings); "-": not recorded
    assert "| vanilla | 5.000 | 1 (baseline) | 5.000 | - | - | on |" in text
    assert "| arctic-serve-head | 7.000 | 1.4000 | 7.000 | 0.500 | - | off |" in text
    assert "| arctic-inference-head | timed out after 200 s: capturing | | | | | |" in text
    assert "composed = `tau / (verify_k3_ratio(b)" in text
