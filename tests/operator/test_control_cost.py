"""control.cost: verify-cost curves by draft length, as the chart ships them (exact values)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arctic_operator.control.cost import DEFAULT_COSTS, VerifyCostModel, VerifyCosts, interpolate_log

COSTS = VerifyCosts(batch_sizes=(1, 16), by_draft_len=((1, (1.2, 1.4)), (5, (1.6, 2.2))))


def test_interpolate_log() -> None:
    xs, ys = (1.0, 4.0, 16.0), (1.0, 2.0, 4.0)
    assert interpolate_log(xs, ys, 0.5) == 1.0
    assert interpolate_log(xs, ys, 1.0) == 1.0
    assert interpolate_log(xs, ys, 2.0) == pytest.approx(1.5)
    assert interpolate_log(xs, ys, 4.0) == 2.0
    assert interpolate_log(xs, ys, 8.0) == pytest.approx(3.0)
    assert interpolate_log(xs, ys, 16.0) == 4.0
    assert interpolate_log(xs, ys, 100.0) == 4.0


def test_model_for_interpolates_in_the_draft_length() -> None:
    assert COSTS.model_for(3).cost_ratios == pytest.approx((1.4, 1.8))  # halfway from k=1 to k=5
    assert COSTS.model_for(2).cost_ratios == pytest.approx((1.3, 1.6))
    assert COSTS.model_for(1).cost_ratios == (1.2, 1.4)
    assert COSTS.model_for(0.3).cost_ratios == (1.2, 1.4)  # flat below the shortest
    assert COSTS.model_for(5).cost_ratios == (1.6, 2.2)
    assert COSTS.model_for(16).cost_ratios == (1.6, 2.2)  # flat above the longest
    assert COSTS.model_for(None).cost_ratios == (1.2, 1.4)  # the middle (lower) measured k
    three = VerifyCosts((1,), ((1, (1.1,)), (3, (1.3,)), (5, (1.5,))))
    assert three.model_for(None).cost_ratios == (1.3,)
    assert COSTS.model_for(3).batch_sizes == (1, 16)
    assert COSTS.draft_lengths() == (1, 5)


def test_bad_curves_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="at least one draft length"):
        VerifyCosts((1,), ())
    with pytest.raises(ValueError, match=r"increasing and >= 1, got \[3, 1\]"):
        VerifyCosts((1,), ((3, (1.1,)), (1, (1.2,))))
    with pytest.raises(ValueError, match=r"increasing and >= 1, got \[0\]"):
        VerifyCosts((1,), ((0, (1.1,)),))
    with pytest.raises(ValueError, match=r"increasing and >= 1, got \[0, 3\]"):
        VerifyCosts((1,), ((0, (1.1,)), (3, (1.2,))))
    assert VerifyCosts((1,), ((1, (1.0,)),)).model_for(1).cost(1) == 1.0  # no extra cost is allowed
    with pytest.raises(ValueError, match="same length"):
        VerifyCosts((1, 4), ((1, (1.1,)),))
    with pytest.raises(ValueError, match=r"by_draft_len\[1\]: cost ratios must be positive"):
        VerifyCosts((1,), ((1, (0.0,)),))
    with pytest.raises(ValueError, match="must be positive"):
        VerifyCosts((1,), ((1, (float("nan"),)),))


def test_json_round_trip_and_errors(tmp_path: Path) -> None:
    data = COSTS.to_json()
    assert data == {
        "gpu": "",
        "modelShape": "",
        "source": "",
        "batchSizes": [1, 16],
        "verifyCost": {"1": [1.2, 1.4], "5": [1.6, 2.2]},
    }
    assert VerifyCosts.from_json(data) == COSTS
    shuffled = {**data, "verifyCost": {"5": [1.6, 2.2], "1": [1.2, 1.4]}, "gpu": "H200"}
    assert VerifyCosts.from_json(shuffled).by_draft_len == COSTS.by_draft_len
    assert VerifyCosts.from_json(shuffled).gpu == "H200"
    with pytest.raises(ValueError, match="missing key 'verifyCost'"):
        VerifyCosts.from_json({"batchSizes": [1]})
    with pytest.raises(ValueError, match="batchSizes must be integers"):
        VerifyCosts.from_json({"batchSizes": ["x"], "verifyCost": {"1": [1.1]}})
    path = tmp_path / "c.json"
    path.write_text(json.dumps(data))
    assert VerifyCosts.load(path) == COSTS
    path.write_text("[1]")
    with pytest.raises(ValueError, match="must be a JSON object"):
        VerifyCosts.load(path)
    path.write_text("{")
    with pytest.raises(ValueError, match=f"cost file {path}"):
        VerifyCosts.load(path)
    with pytest.raises(ValueError, match="cost file"):
        VerifyCosts.load(tmp_path / "missing.json")


def test_the_built_in_curves() -> None:
    assert DEFAULT_COSTS.batch_sizes == (1, 4, 16, 64)
    assert DEFAULT_COSTS.draft_lengths() == (1, 3, 5)
    assert DEFAULT_COSTS.model_for(3) == VerifyCostModel((1, 4, 16, 64), (1.262, 1.328, 1.381, 1.67))
    assert DEFAULT_COSTS.gpu == "H100" and "verify-8b-" in DEFAULT_COSTS.source


def test_step_times_and_prefill_rate_round_trip_and_are_checked() -> None:
    timed = VerifyCosts((1, 16), ((1, (1.2, 1.4)),), decode_step_s=(0.006, 0.008), prefill_s_per_token=3e-5)
    data = timed.to_json()
    assert (data["decodeStepSeconds"], data["prefillSecondsPerToken"]) == ([0.006, 0.008], 3e-5)
    assert VerifyCosts.from_json(data) == timed
    assert "decodeStepSeconds" not in COSTS.to_json() and "prefillSecondsPerToken" not in COSTS.to_json()
    assert timed.decode_step(4) == pytest.approx(0.007)  # halfway in log between 6 and 8 ms
    assert (timed.decode_step(0.5), timed.decode_step(32)) == (0.006, 0.008)  # at least one; flat outside
    assert COSTS.decode_step(4) is None
    with pytest.raises(ValueError, match=r"decode_step_s: one positive time per batch size \[1, 16\]"):
        VerifyCosts((1, 16), ((1, (1.2, 1.4)),), decode_step_s=(0.006,))
    with pytest.raises(ValueError, match="decode_step_s: one positive time"):
        VerifyCosts((1, 16), ((1, (1.2, 1.4)),), decode_step_s=(0.006, 0.0))
    with pytest.raises(ValueError, match=r"prefill_s_per_token: must be positive, got 0\.0"):
        VerifyCosts((1, 16), ((1, (1.2, 1.4)),), prefill_s_per_token=0.0)
    with pytest.raises(ValueError, match="prefillSecondsPerToken a number"):
        VerifyCosts.from_json({**data, "prefillSecondsPerToken": "fast"})


def test_the_built_in_timings() -> None:
    assert DEFAULT_COSTS.decode_step_s == (0.006674, 0.006661, 0.006704, 0.007587)
    assert DEFAULT_COSTS.prefill_s_per_token == 2.742e-05
    chart = Path(__file__).resolve().parents[2] / "charts/arctic-serve/files/cost/h100-llama-3.1-8b.json"
    assert VerifyCosts.load(chart).prefill_s_per_token == DEFAULT_COSTS.prefill_s_per_token


def test_every_cost_profile_the_chart_ships_loads() -> None:
    """``operator.costProfile`` names a file in files/cost: each must load as the operator reads it
    (``ARCTIC_OPERATOR_COST_FILE``), with its GPU and a verify-cost curve per batch size."""
    files = sorted((Path(__file__).resolve().parents[2] / "charts/arctic-serve/files/cost").glob("*.json"))
    assert [f.name for f in files] == ["h100-llama-3.1-8b.json", "h200-llama-3.1-8b.json"]
    for f in files:
        costs = VerifyCosts.load(f)
        assert costs.gpu == f.name.split("-")[0].upper() and costs.model_shape == "llama-3.1-8b"
        assert costs.decode_step_s and (costs.prefill_s_per_token or 0) > 0
