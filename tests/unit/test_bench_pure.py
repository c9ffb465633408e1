"""Benchmark harness pieces that need no engine: model shapes, ratios, the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.report import render
from bench.run import ratios
from bench.suites import SUITES, llama_8b_config, llama_weight_bytes


def test_llama_8b_weight_bytes() -> None:
    # 8.03 B parameters; a decode step reads all but the input embedding table (one row of it)
    total = llama_weight_bytes(llama_8b_config())
    embedding = 128256 * 4096 * 2
    assert abs((total + embedding) / 2 - 8.03e9) < 0.01e9


def stat(median: float) -> dict[str, Any]:
    return {"median": median, "min": median, "max": median, "spread_rel": 0.0, "values": [median]}


def fake_run(suite: str = "cpu-smoke") -> dict[str, Any]:
    cases = {
        "latency-64-16": {"ttft_ms": stat(10.0), "tpot_ms": stat(2.0), "e2e_ms": stat(40.0)},
        "throughput-8x64-32": {
            "output_tok_s": stat(100.0),
            "total_tok_s": stat(300.0),
            "elapsed_s": stat(2.5),
        },
    }
    slower = json.loads(json.dumps(cases))
    slower["latency-64-16"]["tpot_ms"] = stat(2.1)
    slower["throughput-8x64-32"]["output_tok_s"] = stat(95.0)
    return {
        "suite": suite,
        "description": "d",
        "created": "2026-11-23T19:00:00Z",
        "duration_s": 12.0,
        "environment": {
            "gpu": None,
            "cpus": 2,
            "vllm": "0.26.0",
            "torch": "2.11.0",
            "arctic_serve": "0.1.0",
            "commit": "abc",
        },
        "config": {
            "cases": [
                {
                    "name": "latency-64-16",
                    "kind": "latency",
                    "input_len": 64,
                    "output_len": 16,
                    "num_prompts": 1,
                    "repeats": 2,
                },
                {
                    "name": "throughput-8x64-32",
                    "kind": "throughput",
                    "input_len": 64,
                    "output_len": 32,
                    "num_prompts": 8,
                    "repeats": 1,
                },
            ]
        },
        "floor": None,
        "engines": {
            "vanilla": {"start_s": 30.0, "cases": cases},
            "arctic-serve-off": {"start_s": 31.0, "cases": slower},
            "arctic-inference-off": {"error": "not run: arctic_inference is not importable"},
        },
    }


def test_ratios_are_engine_over_vanilla_on_headline_figures() -> None:
    run = fake_run()
    got = ratios(SUITES["cpu-smoke"], run["engines"])
    assert set(got) == {"arctic-serve-off/vanilla"}
    row = got["arctic-serve-off/vanilla"]
    assert abs(row["latency-64-16.tpot_ms"] - 1.05) < 1e-9
    assert abs(row["throughput-8x64-32.output_tok_s"] - 0.95) < 1e-9


def test_report_renders_every_engine_and_error(tmp_path: Path) -> None:
    run = fake_run()
    run["ratios"] = ratios(SUITES["cpu-smoke"], run["engines"])
    results = tmp_path / "results"
    results.mkdir()
    (results / "cpu-smoke-x.json").write_text(json.dumps(run))
    text = render(results, tmp_path / "docs", intro=None)
    assert "## cpu-smoke (2026-11-23T19:00:00Z)" in text
    assert "| arctic-serve-off | 10.00 | 2.100 | 0.0% | 1.0500 |" in text
    assert "| arctic-serve-off | 95 | 300 | 2.50 | 0.0% | 0.9500 |" in text
    assert "arctic-inference-off | not run: arctic_inference is not importable" in text
    assert "make bench SUITE=cpu-smoke" in text and "bench/results/cpu-smoke-x.json" in text


def test_verify_cost_table_and_tokens_per_step() -> None:
    from bench.report import tokens_per_step, verify_cost_lines

    assert tokens_per_step({"output_tokens": 100, "num_accepted_tokens": 20}) == 100 / 80
    verify = {
        "config": {"cases": [{"name": "batch-1", "kind": "latency", "num_prompts": 1}]},
        "ratios": {"verify-k3/vanilla": {"batch-1.tpot_ms": 1.25}},
    }
    lines = verify_cost_lines(verify)
    assert "| 1 | 1.250 |" in lines  # the break-even table
    assert not any("implied" in line.lower() for line in lines)  # no second run's acceptance mixed in


def test_failed_engines_are_reported_not_hidden(tmp_path: Path) -> None:
    run = fake_run()
    run["engines"]["vanilla"] = {"error": "rc=1: CUDA out of memory | boom"}
    run["ratios"] = ratios(SUITES["cpu-smoke"], run["engines"])
    assert run["ratios"] == {}
    results = tmp_path / "results"
    results.mkdir()
    (results / "cpu-smoke-y.json").write_text(json.dumps(run))
    text = render(results, tmp_path / "docs", intro=None)
    assert "| vanilla | rc=1: CUDA out of memory / boom |" in text
