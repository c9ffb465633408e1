"""Planning of the simulator's validation against a real engine (bench/control_validate.py): the
segments, the rate scaling, one request list for both paths, the engine's acceptance, the probe's
calibration and the comparison, on worked numbers."""

from __future__ import annotations

import json
import math

import pytest
from bench import control
from bench import control_validate as cv
from bench.control import Calibration, Request

REQUEST_KEYS = {
    "trace",
    "segment",
    "requests",
    "request_digest",
    "request_classes",
    "measured",
    "predicted",
    "ratio",
    "within_15pct",
    "failed",
    "predicted_unfinished",
    "predicted_cap_changes",
    "predicted_cap_reasons",
    "predicted_drafted_fraction",
}


@pytest.fixture(scope="module")
def cal() -> Calibration:
    return control.load_calibration()


def tiny_cal() -> Calibration:
    """Step 10 ms at batch 1, 20 ms at 32; 0.1 ms of prefill per prompt token."""
    return Calibration(
        decode_batches=(1, 32),
        decode_step_s=(0.01, 0.02),
        verify_batches=(1, 32),
        verify_cost={3: (1.2, 1.5)},
        prefill_s_per_token=1e-4,
        engine_start_s=60.0,
        accepted_per_step=dict.fromkeys(control.CLASS_WEIGHTS, 1.5),
        draft_len=dict.fromkeys(control.CLASS_WEIGHTS, 3.0),
        by_draft_cap={16: dict.fromkeys(control.CLASS_WEIGHTS, (1.5, 3.0))},
    )


def test_segments_are_the_traces_informative_windows() -> None:
    steady, bursty, diurnal = (control.TRACES[n] for n in ("steady", "bursty", "diurnal"))
    assert cv.segment_window(steady, 90) == (steady, 0.0)
    # a third of the segment at the base rate, then the first burst (it starts at 600 - 120 s)
    assert cv.segment_window(bursty, 90) == (bursty, 450.0)
    assert cv.peak_rate(bursty, 450, 29.5) == 5 and cv.peak_rate(bursty, 450, 90) == 30
    # diurnal: the day compressed x0.1 (6 minutes), from a quarter of it: half load up to the peak
    day, start = cv.segment_window(diurnal, 90)
    assert (day.duration_s, start) == (360.0, 90.0)
    assert day.rate(90) == pytest.approx(21.5) and cv.peak_rate(day, 90, 90) == pytest.approx(40)
    with pytest.raises(ValueError, match="segment_s"):
        cv.segment_window(steady, 0)
    with pytest.raises(ValueError, match="unknown kind 'flat'"):
        cv.segment_window(control.Trace("x", "flat", 10, 1, 1), 5)


def test_rates_are_scaled_so_one_replica_runs_the_target_at_the_peak() -> None:
    cal = tiny_cal()
    # idle engine: 1000 prompt tokens x 0.1 ms + 249 steps of 20 ms at 32 running = 0.1 + 4.98 s
    assert cv.e2e_estimate_s(cal, 32, 1.0) == pytest.approx(5.08)
    # lengths / 8: 125 x 0.1 ms + 30.25 steps
    assert cv.e2e_estimate_s(cal, 32, 8.0) == pytest.approx(0.0125 + 30.25 * 0.02)
    # at 4 arrivals/s, 40 % of each second prefills others: every decode step takes 1 / 0.6 longer
    assert cv.e2e_estimate_s(cal, 32, 1.0, rate=4.0) == pytest.approx(0.1 + 4.98 / 0.6)
    with pytest.raises(ValueError, match="saturates"):
        cv.e2e_estimate_s(cal, 32, 1.0, rate=10.0)
    # Little's law with that stretch: r (0.1 + 4.98 / (1 - 0.1 r)) = 32, the smaller root of
    # 0.01 r^2 - 8.28 r + 32 = 0 (without the prefill share it would be 32 / 5.08 = 6.3 per second)
    rate = cv.sustainable_rate(cal, 32, 1.0)
    assert rate == pytest.approx((8.28 - math.sqrt(8.28**2 - 1.28)) / 0.02)
    assert rate * cv.e2e_estimate_s(cal, 32, 1.0, rate=rate) == pytest.approx(32)
    assert cv.rate_scale(25.0, 20.0) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="rate_scale"):
        cv.rate_scale(0.0, 20.0)
    with pytest.raises(ValueError, match="running_target"):
        cv.sustainable_rate(cal, 0, 1.0)
    plan = cv.plan_trace(control.TRACES["bursty"], cal, 90, 32, 1.0, 4096)
    assert plan.rate_scale == pytest.approx(rate / 30)
    assert plan.rate_range == pytest.approx((5 * plan.rate_scale, 30 * plan.rate_scale))
    assert plan.segment()["offset_s"] == 450.0 and plan.segment()["time_scale"] == 1.0


def test_requests_come_from_the_simulators_generator_on_the_scaled_segment() -> None:
    cal = tiny_cal()
    plan = cv.plan_trace(control.TRACES["steady"], cal, 60, 32, 1.0, 4096, seed=3)
    scale = plan.rate_scale
    segment = cv.SegmentTrace(
        name="steady",
        kind="steady",
        duration_s=60,
        base_rate=25 * scale,
        peak_rate=25 * scale,
        source=control.TRACES["steady"],
        rate_scale=scale,
    )
    assert list(plan.requests) == control.generate_requests(segment, cal, 3)
    assert all(0 <= r.arrival < 60 for r in plan.requests)
    assert [r.id for r in plan.requests] == list(range(len(plan.requests)))
    again = cv.plan_trace(control.TRACES["steady"], cal, 60, 32, 1.0, 4096, seed=3)
    other = cv.plan_trace(control.TRACES["steady"], cal, 60, 32, 1.0, 4096, seed=4)
    assert cv.request_digest(again.requests) == cv.request_digest(plan.requests)
    assert cv.request_digest(other.requests) != cv.request_digest(plan.requests)
    # about rate x seconds arrivals (Poisson): 3.89 per second for 60 s = 233
    assert 180 < len(plan.requests) < 290


def test_lengths_scale_down_for_the_cpu_and_must_fit_the_context() -> None:
    reqs = [Request(0, 0.5, 1000, 250, "edit", 1.0), Request(1, 0.7, 40, 9, "agent", 1.0)]
    assert cv.scale_lengths(reqs, 8.0, 1024) == [
        Request(0, 0.5, 125, 31, "edit", 1.0),
        Request(1, 0.7, 8, 2, "agent", 1.0),  # at least 8 prompt and 2 output tokens
    ]
    assert cv.scale_lengths(reqs, 1.0, 4096) == reqs
    with pytest.raises(ValueError, match="request 0: 1000 \\+ 250 tokens exceed max_model_len 1024"):
        cv.scale_lengths(reqs, 1.0, 1024)


def test_the_engine_gets_exactly_the_predicted_requests() -> None:
    cal = tiny_cal()
    plan = cv.plan_trace(control.TRACES["diurnal"], cal, 30, 32, 8.0, 1024)
    inputs = cv.load_inputs(plan.requests, seed=0)
    assert inputs.offsets == tuple(r.arrival for r in plan.requests)
    assert inputs.max_tokens == tuple(r.output_tokens for r in plan.requests)
    assert [len(p) for p in inputs.prompts] == [r.prompt_tokens for r in plan.requests]
    assert all(cv.PROMPT_IDS[0] <= t < cv.PROMPT_IDS[1] for p in inputs.prompts for t in p)
    assert cv.load_inputs(plan.requests, seed=0) == inputs
    prediction = cv.predict(plan.requests, cal, control.EngineConfig(), cv.cap_policy_for(cal))
    assert [t.id for t in prediction.timings] == [r.id for r in plan.requests]
    assert prediction.pods == 1


def test_the_prediction_keeps_one_replica_under_any_load() -> None:
    cal = tiny_cal()
    # 4x the rate one replica should take: the operator's replica policy would scale; held at one
    plan = cv.plan_trace(control.TRACES["steady"], cal, 30, 128, 1.0, 4096)
    prediction = cv.predict(plan.requests, cal, control.EngineConfig(), cv.cap_policy_for(cal))
    assert prediction.pods == 1
    assert all(t.ttft_s is not None and t.ttft_s > 0 for t in prediction.timings)
    assert all(t.tpot_s is not None and t.tpot_s > 0 for t in prediction.timings)


def test_segments_shrink_to_fit_the_budget() -> None:
    assert cv.fit_segment_s(90, None, 3, 25) == 90
    assert cv.fit_segment_s(90, 600, 3, 25) == 90
    assert cv.fit_segment_s(90, 300, 3, 25) == 75  # 100 s per trace, 25 of them draining
    assert cv.fit_segment_s(90, 301, 3, 25) == 75  # whole seconds
    with pytest.raises(ValueError, match="leaves 8 s per segment"):
        cv.fit_segment_s(90, 99, 3, 25)


def test_acceptance_is_one_setting_per_engine_the_mix_mean(cal: Calibration) -> None:
    assert cv.acceptance_rates(1.7168, 3) == (1.0, 0.7168, 0.0)
    assert cv.acceptance_rates(0.0, 3) == (0.0, 0.0, 0.0)
    assert cv.acceptance_rates(3.0, 3) == (1.0, 1.0, 1.0)
    assert cv.acceptance_rates(2.0, 3) == (1.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="within \\[0, k=3\\]"):
        cv.acceptance_rates(3.5, 3)
    acc = cv.engine_acceptance(cal)
    classes = list(control.CLASS_WEIGHTS)
    mean_draft = sum(cal.draft_len[c] for c in classes) / 3
    assert acc.k == round(mean_draft) == 3
    assert acc.accepted_per_step == pytest.approx(sum(cal.accepted_per_step[c] for c in classes) / 3)
    assert sum(acc.rates) == pytest.approx(acc.accepted_per_step, abs=1e-5)
    config = acc.speculative_config(synthetic=True)
    assert config == {
        "method": "custom_class",
        "model": "bench.proposers.FixedLengthProposer",
        "num_speculative_tokens": 3,
        "rejection_sample_method": "synthetic",
        "synthetic_acceptance_rates": list(acc.rates),
    }
    assert "rejection_sample_method" not in acc.speculative_config(synthetic=False)


def test_the_prediction_gives_every_request_the_engines_acceptance(cal: Calibration) -> None:
    ecal = cv.engine_calibration(cal, 1.5, 3, kv_capacity_tokens=123_456)
    table = control.draft_table(ecal)
    assert set(table) == {control.DEFAULT_DRAFT_CAP}
    for klass in control.CLASS_WEIGHTS:
        drafting = table[control.DEFAULT_DRAFT_CAP][klass]
        assert (drafting.accepted, drafting.draft_len) == (1.5, 3.0)
        assert drafting.cost == ecal.costs().model_for(3.0)
    assert ecal.kv_capacity_tokens == 123_456
    assert cv.engine_calibration(cal, 1.5, 3).kv_capacity_tokens == cal.kv_capacity_tokens


def test_a_probe_becomes_a_calibration() -> None:
    probe = cv.Probe(
        batches=(1, 4),
        vanilla_tpot_s=(0.01, 0.02),
        drafting_tpot_s=(0.006, 0.015),
        tokens_per_step=(2.0, 1.6),
        long_prompt=500,
        long_prompt_ttft_s=0.5,
        k=3,
    )
    got = cv.probe_calibration(probe, 42.0, 9000, "CPU", "probe")
    assert got.decode_step_s == (0.01, 0.02) and got.verify_batches == (1, 4)
    assert got.verify_cost[3] == pytest.approx((1.2, 1.2))  # 0.006 x 2 / 0.01, 0.015 x 1.6 / 0.02
    assert got.prefill_s_per_token == pytest.approx(0.001)
    assert list(got.accepted_per_step.values()) == [pytest.approx(0.8)] * 3  # mean of 1.0 and 0.6
    accepted, draft_len = got.by_draft_cap[control.DEFAULT_DRAFT_CAP]["edit"]
    assert accepted == pytest.approx(0.8) and draft_len == 3.0
    assert (got.engine_start_s, got.kv_capacity_tokens, got.gpu) == (42.0, 9000, "CPU")
    with pytest.raises(ValueError, match="increasing"):
        cv.probe_calibration(
            cv.Probe((4, 1), (0.01, 0.02), (0.01, 0.02), (1.0, 1.0), 10, 0.1, 3), 1, 1, "CPU", "x"
        )


def test_ratios_and_the_15_percent_bar_on_worked_numbers() -> None:
    measured = {"p50_ttft_s": 0.1, "p95_ttft_s": 0.2, "p50_tpot_s": 0.01, "p95_tpot_s": 0.02}
    predicted = {"p50_ttft_s": 0.11, "p95_ttft_s": 0.17, "p50_tpot_s": 0.0115, "p95_tpot_s": 0.02}
    ratios, within = cv.compare(measured, predicted)
    assert ratios == {"p50_ttft_s": 1.1, "p95_ttft_s": 0.85, "p50_tpot_s": 1.15, "p95_tpot_s": 1.0}
    assert within  # the bounds count as within
    assert not cv.compare(measured, {**predicted, "p50_tpot_s": 0.0116})[1]  # 1.16
    assert not cv.compare(measured, {**predicted, "p95_ttft_s": 0.168})[1]  # 0.84
    assert not cv.compare(measured, predicted, failed=1)[1]
    ratios, within = cv.compare({**measured, "p95_tpot_s": 0.0}, predicted)
    assert math.isnan(ratios["p95_tpot_s"]) and not within
    ratios, within = cv.compare({**measured, "p50_ttft_s": math.nan}, predicted)
    assert math.isnan(ratios["p50_ttft_s"]) and not within


def test_measured_timings_use_bench_loads_tpot_and_count_short_answers_as_failed() -> None:
    reqs = [Request(0, 0.0, 10, 5, "edit", 1.0), Request(1, 1.0, 10, 5, "edit", 1.0)]
    timings, failed = cv.measured_timings(reqs, [(True, 0.2, 1.0, 5), (True, 0.2, 1.0, 4)])
    assert timings[0].ttft_s == 0.2 and timings[0].tpot_s == pytest.approx(0.2)  # (1.0 - 0.2) / 4
    assert timings[1] == cv.Timing(1, None, None)  # 4 tokens of 5: short
    assert failed == 1
    timings, failed = cv.measured_timings(reqs, [(False, None, 3.0, 0), (True, 0.1, 0.5, 5)])
    assert failed == 1 and timings[0] == cv.Timing(0, None, None)
    assert timings[1].ttft_s == 0.1 and timings[1].tpot_s == pytest.approx(0.1)


def test_summary_is_the_simulators_percentile_over_finished_requests() -> None:
    timings = [cv.Timing(i, 0.1 * (i + 1), 0.01 * (i + 1)) for i in range(5)] + [cv.Timing(5, None, None)]
    assert cv.summary(timings) == {
        "p50_ttft_s": 0.3,
        "p95_ttft_s": 0.48,  # 0.4 + 0.8 x (0.5 - 0.4)
        "p50_tpot_s": 0.03,
        "p95_tpot_s": 0.048,
    }


def test_a_trace_record_has_the_issues_keys_and_is_json() -> None:
    cal = tiny_cal()
    plan = cv.plan_trace(control.TRACES["steady"], cal, 20, 32, 1.0, 4096)
    prediction = cv.predict(plan.requests, cal, control.EngineConfig(), cv.cap_policy_for(cal))
    # measured = predicted x 1.1 (TTFT) and x 0.9 (TPOT): ratios 1/1.1 and 1/0.9
    measured = [
        cv.Timing(t.id, t.ttft_s * 1.1 if t.ttft_s else None, t.tpot_s * 0.9 if t.tpot_s else None)
        for t in prediction.timings
    ]
    record = cv.trace_record(plan, measured, 0, prediction, {"controller": {"ticks": 3}})
    assert set(record) == REQUEST_KEYS | {"controller"}
    assert record["requests"] == len(plan.requests) and record["trace"] == "steady"
    assert (
        set(record["measured"]) == set(record["predicted"]) == set(record["ratio"]) == set(cv.PERCENTILE_KEYS)
    )
    assert record["ratio"]["p95_ttft_s"] == pytest.approx(1 / 1.1, abs=1e-3)
    assert record["ratio"]["p50_tpot_s"] == pytest.approx(1 / 0.9, abs=1e-3)
    assert record["within_15pct"] is True
    assert sum(record["request_classes"].values()) == len(plan.requests)
    json.dumps(record, allow_nan=False)
    with_probe = cv.trace_record(plan, measured, 0, prediction, probe_prediction=prediction)
    assert with_probe["predicted_probe"] == record["predicted"] and with_probe["within_15pct_probe"]


def test_engine_flags_pin_the_limits_the_prediction_assumes(cal: Calibration) -> None:
    acc = cv.engine_acceptance(cal)
    gpu = cv.engine_flags("gpu", cv.SETTINGS["gpu"], acc.speculative_config(True))
    assert gpu[gpu.index("--max-num-seqs") + 1] == "256"
    assert gpu[gpu.index("--max-num-batched-tokens") + 1] == "8192"
    assert gpu[gpu.index("--load-format") + 1] == "dummy"
    spec = json.loads(gpu[gpu.index("--speculative-config") + 1])
    assert spec["synthetic_acceptance_rates"] == list(acc.rates)
    cpu = cv.engine_flags("cpu", cv.SETTINGS["cpu"], acc.speculative_config(False))
    assert "--load-format" not in cpu and cpu[cpu.index("--max-num-seqs") + 1] == "8"


def test_the_kv_capacity_comes_from_the_engines_log() -> None:
    log = "INFO [kv_cache_utils.py:1] GPU KV cache size: 1,234,567 tokens\nmore\n"
    assert cv.kv_capacity_from_log(log) == 1_234_567
    assert cv.kv_capacity_from_log("nothing here") is None
