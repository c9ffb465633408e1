"""The shift suite's pure parts: layouts and their flags, the bursty trace, ratios, merging."""

from __future__ import annotations

from typing import Any

import pytest
from bench import shift


def test_layouts_use_every_gpu_once() -> None:
    for gpus in (2, 4, 8):
        for layout in shift.layouts(gpus).values():
            assert layout.servers * layout.gpus_per_server == gpus, layout
    eight = shift.layouts(8)
    assert eight["tp"].flags(512) == ["--tensor-parallel-size", "8"]
    assert eight["shift"].flags(512) == [
        "--tensor-parallel-size",
        "1",
        "--ulysses-sequence-parallel-size",
        "8",
        "--enable-shift-parallel",
        "--shift-parallel-threshold",
        "512",
    ]
    # Arctic Inference's shift gets exactly the same flags, under its own plugin
    assert eight["arctic-shift"].flags(512) == eight["shift"].flags(512)
    assert eight["dp"].servers == 8 and eight["dp"].flags(512) == ["--tensor-parallel-size", "1"]


def test_server_env_places_each_replica_on_its_own_gpus() -> None:
    dp = shift.layouts(4)["dp"]
    assert [shift.server_env(dp, "gpu", i, 4)["CUDA_VISIBLE_DEVICES"] for i in range(4)] == [
        "0",
        "1",
        "2",
        "3",
    ]
    tp = shift.layouts(4)["tp"]
    assert shift.server_env(tp, "gpu", 0, 4)["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"
    arctic = shift.server_env(shift.layouts(2)["arctic-shift"], "gpu", 0, 2)
    assert arctic["VLLM_PLUGINS"] == "arctic_inference" and arctic["ARCTIC_SERVE_ENABLED"] == "0"
    assert shift.server_env(tp, "gpu", 0, 4)["NCCL_NVLS_ENABLE"] == "0"


def test_bursty_trace_is_seeded_and_has_bursts() -> None:
    w = shift.WORKLOADS["gpu"]
    trace = shift.bursty_trace(w)
    assert trace == shift.bursty_trace(w)  # same seed, same trace
    assert [a.at_s for a in trace] == sorted(a.at_s for a in trace)
    bursts = [a for a in trace if a.input_len == w.burst_input]
    assert len(bursts) == w.burst_size * 3  # at 15 s, 45 s and 75 s of a 90 s trace
    for start in (15.0, 45.0, 75.0):
        assert sum(start <= a.at_s < start + 1 for a in bursts) == w.burst_size
    trickle = [a for a in trace if a.input_len == w.trickle_input]
    assert 120 < len(trickle) < 240  # ~2 per second for 90 s


def result(ttft: float, tpot: float, tok_s: float, p95: float) -> dict[str, Any]:
    return {
        "cases": {
            "single": {"ttft_ms": {"p50": ttft}, "tpot_ms": {"p50": tpot}},
            "batch": {"total_tok_s": tok_s},
            "bursty": {"e2e_s": {"p50": p95 / 2, "p95": p95, "p99": p95 * 1.2}, "ttft_s": {"p95": 1.0}},
        }
    }


def test_ratios_compare_shift_with_every_layout_and_the_best_static_one() -> None:
    engines = {
        "shift": result(50, 5.0, 40_000, 10.0),
        "tp": result(50, 5.0, 25_000, 30.0),
        "dp": result(100, 9.0, 42_000, 20.0),
        "sp": {"error": "not run"},
    }
    out = shift.ratios(engines)
    assert out["shift/tp"]["single.tpot_ms.p50"] == 1.0
    assert out["shift/dp"]["batch.total_tok_s"] == pytest.approx(40_000 / 42_000)
    assert "shift/sp" not in out  # nothing to compare with
    assert out["shift/best-static"]["bursty.e2e_s.p95"] == pytest.approx(10.0 / 20.0)


def test_merge_refuses_parts_of_different_runs() -> None:
    part = {"shape": "8b", "gpus": 2, "device": "gpu", "created": "1", "environment": {}, "config": {}}
    merged = shift.merge(
        [
            {**part, "engines": {"tp": result(1, 1, 1, 1)}},
            {**part, "created": "2", "engines": {"shift": result(1, 1, 2, 1)}},
        ]
    )
    assert (
        set(merged["engines"]) == {"tp", "shift"} and merged["ratios"]["shift/tp"]["batch.total_tok_s"] == 2
    )
    with pytest.raises(ValueError, match="parts from different runs"):
        shift.merge([{**part, "engines": {}}, {**part, "gpus": 4, "engines": {}}])


def test_plan_prints_one_command_per_engine(capsys: pytest.CaptureFixture[str]) -> None:
    assert shift.main(["plan", "--shape", "8b", "--gpus", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:5] == [
        f"bash bench/gpu/host.sh shift:8b:2:{name}    # ~7 min"
        for name in ("tp", "sp", "shift", "dp", "arctic-shift")
    ]
