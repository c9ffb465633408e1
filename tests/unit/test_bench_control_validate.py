"""Planning of the simulator's validation against a real engine (bench/control_validate.py): the
segments, the rate scaling, one request list for both paths, the engine's acceptance, the probe's
calibration and the comparison, on worked numbers."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

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


def test_a_closed_batchs_step_time_is_read_from_its_stream_while_it_all_decodes() -> None:
    # two requests of 100-token prompts: A's first token at 0.10 s, B's at 0.12 s (its prefill came
    # second); a token every 20 ms; A ends first, at 0.20 s. The window is [0.12, 0.20]: A's 4 tokens
    # from its 2nd to its 6th, B's from its 1st to its 5th, 80 ms each
    a = [(0.10, 1), (0.12, 1), (0.14, 1), (0.16, 1), (0.18, 1), (0.20, 1)]
    b = [(0.12, 1), (0.14, 1), (0.16, 1), (0.18, 1), (0.20, 1), (0.22, 1)]
    w = cv.decode_window(100, [a, b])
    assert (w.batch, w.prompt, w.steps, w.tokens_per_step) == (2, 100, 4, 1.0)
    assert w.step_s == pytest.approx(0.02) and w.chunk_step_s == pytest.approx(0.02)
    assert w.context_tokens == pytest.approx(103.5)  # A: 100 + (2 + 6) / 2; B: 100 + (1 + 5) / 2
    # drafting: chunks of 2-3 tokens, one per 30 ms step; 7 tokens in 90 ms at 7/3 tokens per step
    a = [(0.10, 1), (0.13, 3), (0.16, 2), (0.19, 3), (0.22, 2)]
    b = [(0.13, 1), (0.16, 2), (0.19, 3), (0.22, 2), (0.25, 3)]
    w = cv.decode_window(100, [a, b], tokens_per_step=7 / 3)
    assert (
        w.step_s == pytest.approx(0.03)
        and w.steps == pytest.approx(3)
        and w.chunk_step_s == pytest.approx(0.03)
    )
    with pytest.raises(ValueError, match="request 0 has 1 chunk"):  # B's first token came with A's last
        cv.decode_window(100, [[(0.1, 1), (0.2, 1)], [(0.2, 1), (0.3, 1)]])
    with pytest.raises(ValueError, match="tokens_per_step"):
        cv.decode_window(100, [a], tokens_per_step=0.5)


def _window(batch: int, step: float, context: float, gain: float = 1.0) -> cv.StepWindow:
    return cv.StepWindow(batch, 100, step, context, 50.0, gain, step)


def worked_probe() -> cv.Probe:
    """An engine with decode steps of 10 ms at batch 1 and 12 ms at batch 4, 1 us per context token
    per step, verify cost 1.2 and 1.5, prefill TTFT 15 ms + 20 us per prompt token."""
    return cv.Probe(
        k=3,
        vanilla=(_window(1, 0.01 + 1e-6 * 100, 100), _window(4, 0.012 + 1e-6 * 4 * 100, 100)),
        drafting=(
            _window(1, 0.012 + 1e-6 * 110, 110, 2.5),
            _window(4, 0.018 + 1e-6 * 4 * 120, 120, 2.7),
        ),
        long_vanilla=(_window(4, 0.012 + 1e-6 * 4 * 600, 600),),
        long_drafting=(_window(4, 0.019, 650, 2.7),),
        prefill_tokens=(500, 1000, 2000),
        prefill_ttft_s=(0.025, 0.035, 0.055),
        seconds=40.0,
    )


def test_the_served_probe_becomes_a_calibration_with_the_contexts_cost() -> None:
    cal, fit = cv.served_calibration(worked_probe(), 92.0, 9000, "H200", "probe")
    # the long prompts' excess: 2 ms for 4 x 500 more context tokens = 1 us per token per step
    assert cal.kv_s_per_token == pytest.approx(1e-6) == fit.kv_s_per_token
    assert cal.decode_step_s == pytest.approx((0.01, 0.012))  # the short batches less their contexts
    assert cal.verify_cost == {3: pytest.approx((1.2, 1.5))}
    assert cal.prefill_marginal and cal.prefill_s_per_token == pytest.approx(2e-5)
    assert fit.prefill_intercept_s == pytest.approx(0.015)
    assert cal.request_overhead_s == pytest.approx(0.005)  # the intercept less the batch-1 step
    assert list(cal.accepted_per_step.values()) == [pytest.approx(1.6)] * 3  # mean of 1.5 and 1.7
    assert cal.by_draft_cap[control.DEFAULT_DRAFT_CAP]["edit"] == pytest.approx((1.6, 3.0))
    assert (cal.engine_start_s, cal.kv_capacity_tokens, cal.gpu) == (92.0, 9000, "H200")
    # the model on the long batches: exact where fitted, 0.018 + 0.0026 = 0.0206 s against 0.019 drafting
    assert fit.checks["vanilla-4x100"]["ratio"] == pytest.approx(1.0)
    assert fit.checks["drafting-4x100"]["model_step_s"] == pytest.approx(0.0206)
    assert fit.checks["drafting-4x100"]["ratio"] == pytest.approx(0.0206 / 0.019, abs=1e-4)
    # a context's cost that would leave no decode step is an error, as are unordered batches
    with pytest.raises(ValueError, match="increasing"):
        cv.served_calibration(
            replace(worked_probe(), vanilla=worked_probe().vanilla[::-1]), 1, 1, "H200", "x"
        )
    with pytest.raises(ValueError, match="drafting batch sizes"):
        cv.served_calibration(
            replace(worked_probe(), drafting=worked_probe().drafting[:1]), 1, 1, "H200", "x"
        )
    flat = replace(worked_probe(), prefill_ttft_s=(0.03, 0.03, 0.03))
    with pytest.raises(ValueError, match="does not grow"):
        cv.served_calibration(flat, 1, 1, "H200", "x")
    # without long batches the context is not modelled (0) and the steps are the measured ones
    short_only = replace(worked_probe(), long_vanilla=(), long_drafting=())
    cal0, _ = cv.served_calibration(short_only, 1, 1, "H200", "x")
    assert cal0.kv_s_per_token == 0 and cal0.decode_step_s == pytest.approx((0.0101, 0.0124))


def test_a_drafting_step_is_counted_per_chunk_while_the_server_keeps_up() -> None:
    # drafting at batch 4: 30 ms per chunk, but 28 ms by its tokens (the batch's mean acceptance
    # differs from these requests'): one chunk per step while the plain window got one per token
    drafted = cv.StepWindow(4, 100, 0.028, 120, 30, 2.7, 0.030)
    assert cv.drafting_step_s(drafted, cv.StepWindow(4, 100, 0.012, 100, 50, 1.0, 0.012)) == 0.030
    assert cv.drafting_step_s(drafted, cv.StepWindow(4, 100, 0.012, 100, 50, 1.0, 0.0121)) == 0.030
    # the plain window's chunks carried 2 tokens each: the server merged steps, count tokens instead
    assert cv.drafting_step_s(drafted, cv.StepWindow(4, 100, 0.012, 100, 50, 1.0, 0.024)) == 0.028
    probe = worked_probe()
    merged = replace(probe, drafting=(probe.drafting[0], replace(probe.drafting[1], chunk_step_s=0.05)))
    assert cv.served_calibration(merged, 1, 1, "H200", "x")[0].verify_cost[3][1] == pytest.approx(
        (0.05 - 1e-6 * 4 * 120) / 0.012
    )


def test_a_probe_record_reads_back(tmp_path: Path) -> None:
    probe = worked_probe()
    record = json.loads(json.dumps(dataclasses.asdict(probe)))
    assert cv.Probe.from_record(record) == probe
    cal, fit = cv.served_calibration(probe, 92.0, 9000, "H200", "probe")
    served = cv.served_record(
        cal,
        fit,
        probe,
        device="gpu",
        model="m",
        flags=["--x"],
        env={"gpu": "H200"},
        created="2026-12-04T10:00:00Z",
        argv=["--device", "gpu"],
    )
    path = cv.write_served(tmp_path, served)
    assert path.name == "control-served-20261204T100000Z.json"
    got = json.loads(path.read_text())
    assert got["device"] == "gpu" and got["calibration"]["kv_s_per_token"] == 1e-6
    assert got["calibration"]["verify_cost"] == {"3": [1.2, 1.5]}


def test_the_rate_counts_the_contexts_of_the_running_requests() -> None:
    cal = replace(tiny_cal(), kv_s_per_token=1e-6)
    # 32 running requests of 1000 + 250 / 2 tokens: 36 ms more per step than tiny_cal's 20 ms
    prefill, decode = cv.request_seconds(cal, 32, 1.0)
    assert prefill == pytest.approx(0.1) and decode == pytest.approx(249 * (0.02 + 32 * 1125e-6))


def test_a_recorded_run_is_predicted_again_from_its_own_probe() -> None:
    cal, _ = cv.served_calibration(worked_probe(), 92.0, 900_000, "H200", "probe")
    ecal = cv.engine_calibration(cal, 1.6, 3)
    plan = cv.plan_trace(control.TRACES["steady"], ecal, 10, 32, 1.0, 4096)
    dev = cv.SETTINGS["gpu"]
    engine = control.EngineConfig(dev.max_num_seqs, dev.max_num_batched_tokens, 900_000)
    prediction = cv.predict(plan.requests, ecal, engine, cv.cap_policy_for(ecal))
    record: dict[str, Any] = {
        "setting": {
            "device": "gpu",
            "gpu": "H200",
            "engine_start_s": 92.0,
            "kv_capacity_tokens": 900_000,
            "probe": json.loads(json.dumps(dataclasses.asdict(worked_probe()))),
            "speculation": {"k": 3, "accepted_per_step": 1.6},
        },
        "traces": [json.loads(json.dumps(cv.trace_record(plan, prediction.timings, 0, prediction)))],
    }
    rows = cv.repredict(record, [("steps", 2.0)])
    assert [r["what_if"] for r in rows] == ["as recorded", "steps=2"]
    assert rows[0]["same_requests"] and rows[0]["predicted"] == record["traces"][0]["predicted"]
    assert rows[0]["ratio"] == dict.fromkeys(cv.PERCENTILE_KEYS, 1.0) and rows[0]["within_15pct"]
    assert rows[1]["predicted"]["p50_tpot_s"] > 1.5 * rows[0]["predicted"]["p50_tpot_s"]


def test_what_ifs_change_one_thing_of_a_probes_calibration() -> None:
    assert cv.parse_what_if("steps=1.13") == ("steps", 1.13)
    assert cv.parse_what_if("kv=1.2e-8") == ("kv", 1.2e-8)
    for bad, message in (
        ("step=2", "NAME in steps, kv"),
        ("kv=x", "a number"),
        ("steps=0", "> 0"),
        ("kv=-1", ">= 0"),
    ):
        with pytest.raises(ValueError, match=message):
            cv.parse_what_if(bad)
    cal, _ = cv.served_calibration(worked_probe(), 92.0, 9000, "H200", "probe")
    assert cv.what_if_calibration(cal, "steps", 2.0, (100, 100)).decode_step_s == pytest.approx((0.02, 0.024))
    # the context's cost set to 0: the steps go back to the probe's measured ones at its contexts
    none = cv.what_if_calibration(cal, "kv", 0.0, (100, 100))
    assert none.kv_s_per_token == 0 and none.decode_step_s == pytest.approx((0.0101, 0.0124))
    with pytest.raises(ValueError, match="leaves no decode step"):
        cv.what_if_calibration(cal, "kv", 1e-3, (100, 100))


def test_the_segment_over_time_bins_arrivals() -> None:
    reqs = [Request(i, t, 100, 10, "edit", 1.0) for i, t in enumerate((1.0, 4.0, 12.0))]
    measured = [cv.Timing(0, 0.1, 0.01), cv.Timing(1, 0.3, 0.02), cv.Timing(2, None, None)]
    predicted = [cv.Timing(0, 0.2, 0.01), cv.Timing(1, 0.2, 0.01), cv.Timing(2, 0.5, 0.03)]
    got = cv.by_arrival(reqs, measured, predicted)
    assert [(b["from_s"], b["requests"]) for b in got] == [(0.0, 2), (10.0, 1)]
    assert got[0]["measured"] == {"p50_ttft_s": 0.2, "p95_ttft_s": 0.29, "p50_tpot_s": 0.015}
    assert got[1]["measured"] == {"p50_ttft_s": None, "p95_ttft_s": None, "p50_tpot_s": None}
    assert got[1]["predicted"]["p50_ttft_s"] == 0.5


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
    assert set(record) == REQUEST_KEYS | {"controller", "by_arrival"}
    assert record["requests"] == len(plan.requests) and record["trace"] == "steady"
    assert (
        set(record["measured"]) == set(record["predicted"]) == set(record["ratio"]) == set(cv.PERCENTILE_KEYS)
    )
    assert record["ratio"]["p95_ttft_s"] == pytest.approx(1 / 1.1, abs=1e-3)
    assert record["ratio"]["p50_tpot_s"] == pytest.approx(1 / 0.9, abs=1e-3)
    assert record["within_15pct"] is True
    assert sum(record["request_classes"].values()) == len(plan.requests)
    json.dumps(record, allow_nan=False)
    with_h200 = cv.trace_record(plan, measured, 0, prediction, alternative=("h200", prediction))
    assert with_h200["predicted_h200"] == record["predicted"] and with_h200["within_15pct_h200"]
    assert with_h200["ratio_h200"] == record["ratio"]


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


def test_a_running_target_outside_the_engines_slots_is_refused_by_name(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cv.main(["--device", "cpu", "--running-target", "0"]) == 2
    assert "--running-target must be 1-8 on cpu, got 0" in capsys.readouterr().err
    assert cv.main(["--device", "gpu", "--running-target", "257"]) == 2
    assert "--running-target must be 1-256 on gpu, got 257" in capsys.readouterr().err
