"""The benchmark harness end to end on CPU with the real model, so it cannot rot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from bench.report import render

from tests.engine.conftest import run_bench

pytestmark = pytest.mark.engine


def run_suite(suite: str, out: Path) -> dict[str, Any]:
    """``python -m bench run`` as a user runs it; the one result file it wrote."""
    return run_bench(["bench", "run", "--suite", suite], out, f"{suite}-*.json")


def test_cpu_smoke_suite_produces_a_complete_result(tmp_path: Path, smollm2_dir: Path) -> None:
    out = tmp_path / "results"
    run = run_suite("cpu-smoke", out)
    assert run["environment"]["vllm"] == "0.26.0" and run["environment"]["arctic_serve"] == "0.1.0"
    assert set(run["engines"]) == {"vanilla", "arctic-serve-off"}
    for engine in run["engines"].values():
        assert "error" not in engine, engine.get("error")
        latency = engine["cases"]["latency-64-16"]
        assert 0 < latency["ttft_ms"]["median"] < latency["e2e_ms"]["median"]
        assert latency["tpot_ms"]["median"] > 0 and len(latency["tpot_ms"]["values"]) == 2
        assert engine["cases"]["throughput-8x64-32"]["output_tok_s"]["median"] > 0
    ratio = run["ratios"]["arctic-serve-off/vanilla"]
    assert set(ratio) == {"latency-64-16.tpot_ms", "latency-64-16.ttft_ms", "throughput-8x64-32.output_tok_s"}
    assert all(0.2 < r < 5 for r in ratio.values())  # same engine twice: anything else is a harness bug
    text = render(out, tmp_path / "docs", intro=None)
    assert "| vanilla |" in text and "| arctic-serve-off |" in text


def test_online_cpu_suite_serves_poisson_load_without_failures(tmp_path: Path, smollm2_dir: Path) -> None:
    out = tmp_path / "results"
    run = run_suite("online-cpu", out)
    assert run["config"]["online"][0]["name"] == "poisson-64-16"
    rows = run["engines"]["arctic-serve-off"]["online"]["poisson-64-16"]
    assert [r["rate_per_s"] for r in rows] == [2.0]
    row = rows[0]
    assert row["failed"] == 0 and row["requests"] == 8 and row["output_tokens"] == 8 * 16
    assert 0 < row["ttft_s"]["p50"] <= row["e2e_s"]["p50"] and row["tpot_s"]["p50"] > 0
    text = render(out, tmp_path / "docs", intro=None)
    assert "| arctic-serve-off | 2 |" in text and "latency vs load" in text
