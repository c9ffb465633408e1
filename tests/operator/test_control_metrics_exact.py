"""control.metrics, exact values on worked examples: averaged KV use, caps, the window's edges, a
clock that steps back, the bound on samples kept, and each summary field."""

from __future__ import annotations

import dataclasses

import pytest

from arctic_operator.control.metrics import MetricsWindow, PodSample, counter_increase, parse_metrics


def sample(time: float, running: float = 1.0, waiting: float = 0.0, **counters: float) -> PodSample:
    return PodSample(
        time=time,
        running=running,
        waiting=waiting,
        kv_cache_usage=counters.get("kv"),
        drafts=counters.get("drafts"),
        draft_tokens=counters.get("tokens"),
        accepted_tokens=counters.get("accepted"),
        soft_cap=None,
        hard_cap=None,
        cap_reported=False,
    )


def test_kv_cache_use_is_averaged_over_engines_not_summed_or_multiplied() -> None:
    body = """\
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0"} 1
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0"} 0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0"} 0.2
vllm:kv_cache_usage_perc{engine="1"} 0.6
vllm:kv_cache_usage_perc{engine="2"} 0.7
"""
    assert parse_metrics(body, time=0).kv_cache_usage == pytest.approx(0.5)


def test_caps_round_and_infinity_means_none() -> None:
    body = """\
vllm:num_requests_running 1
vllm:num_requests_waiting 0
arctic_speculation_soft_cap 7.6
arctic_speculation_hard_cap +Inf
"""
    got = parse_metrics(body, time=3.5)
    assert (got.soft_cap, got.hard_cap, got.cap_reported, got.time) == (8, None, True, 3.5)
    assert got.complete and got.missing == ()
    only_hard = parse_metrics("vllm:num_requests_running 1\nvllm:num_requests_waiting 0\n"
                              "arctic_speculation_hard_cap 3\n", time=0)  # fmt: skip
    assert (only_hard.soft_cap, only_hard.hard_cap, only_hard.cap_reported) == (None, 3, True)
    neither = parse_metrics("vllm:num_requests_running 1\nvllm:num_requests_waiting 0\n", time=0)
    assert neither.cap_reported is False
    missing = parse_metrics("vllm:num_requests_waiting 0\n", time=0)
    assert missing.missing == ("running",) and not missing.complete


def test_counter_increase_exact() -> None:
    assert counter_increase([]) == 0.0
    assert counter_increase([5.0]) == 0.0
    assert counter_increase([1.0, 4.0, 10.0]) == 9.0
    assert counter_increase([8.0, 10.0, 3.0, 5.0]) == 2.0 + 3.0 + 2.0  # reset: counts from zero


def test_a_clock_that_steps_back_drops_the_old_samples() -> None:
    window = MetricsWindow(window_s=30)
    window.add("p", sample(100, running=50))
    window.add("p", sample(105, running=50))
    window.add("p", sample(90, running=2))  # the clock went back
    assert [s.time for s in window.samples("p")] == [90]
    got = window.summary("p", now=90, max_age_s=10)
    assert got is not None and (got.samples, got.running) == (1, 2.0)
    window.add("p", sample(90, running=4))  # the same time is not a step back
    assert [s.time for s in window.samples("p")] == [90, 90]


def test_the_window_edges() -> None:
    window = MetricsWindow(window_s=30)
    for t, running in ((0, 10), (30, 20), (31, 30)):
        window.add("p", sample(t, running=running))
    assert [s.time for s in window.samples("p")] == [30, 31]  # 0 is older than 31 - 30
    at_edge = MetricsWindow(window_s=30)
    at_edge.add("p", sample(0, running=10))
    at_edge.add("p", sample(30, running=20))
    assert [s.time for s in at_edge.samples("p")] == [0, 30]  # exactly 30 s old: kept
    got = at_edge.summary("p", now=30, max_age_s=0)
    assert got is not None and got.running == 15.0 and got.newest == 30
    assert at_edge.summary("p", now=30.5, max_age_s=0) is None  # newest older than max age
    later = at_edge.summary("p", now=40, max_age_s=10)
    assert later is not None and (later.samples, later.running) == (1, 20.0)  # 0 is out of [10, 40]


def test_the_samples_kept_are_bounded() -> None:
    window = MetricsWindow(window_s=1e9)
    window.max_samples = 3
    for t in range(5):
        window.add("p", sample(t))
    assert [s.time for s in window.samples("p")] == [2, 3, 4]
    assert window.pods() == ("p",) and window.samples("gone") == ()


def test_every_summary_field() -> None:
    window = MetricsWindow(window_s=30)
    window.add("p", sample(0, running=2, waiting=4, kv=0.2, drafts=10, tokens=30, accepted=6))
    window.add("p", sample(5, running=4, waiting=0, kv=0.4, drafts=20, tokens=60, accepted=18))
    window.add("p", sample(10, running=6, waiting=2, drafts=30, tokens=90, accepted=24))
    got = window.summary("p", now=10, max_age_s=5)
    assert got is not None
    assert (got.pod, got.samples, got.running, got.waiting, got.waiting_last) == ("p", 3, 4.0, 2.0, 2.0)
    assert got.kv_cache_usage == pytest.approx(0.3)  # over the samples that report it
    assert (got.drafts, got.accepted_per_draft, got.acceptance_rate) == (20.0, 0.9, 0.3)
    assert (got.soft_cap, got.hard_cap, got.newest) == (None, None, 10)


def test_a_familys_parts_that_are_not_its_value_are_skipped_wherever_they_come() -> None:
    # a summary's _sum line before its value series: skipped, and the series after it still count
    body = """\
# TYPE vllm:num_requests_running summary
vllm:num_requests_running_sum 50
vllm:num_requests_running{engine="0"} 3
vllm:num_requests_running{engine="1"} 4
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting 0
"""
    assert parse_metrics(body, time=0).running == 7.0


def test_one_draft_in_the_window_is_enough_to_measure_acceptance() -> None:
    window = MetricsWindow(window_s=30)
    window.add("p", sample(0, drafts=10, tokens=30, accepted=2))
    window.add("p", sample(5, drafts=11, tokens=33, accepted=4))
    got = window.summary("p", now=5, max_age_s=5)
    assert got is not None
    assert (got.drafts, got.accepted_per_draft) == (1.0, 2.0)
    assert got.acceptance_rate == pytest.approx(2 / 3)


def test_defaults_thirty_seconds_and_a_thousand_samples() -> None:
    window = MetricsWindow()
    window.add("p", sample(0))
    window.add("p", sample(30.5))  # 30.5 s later: the first is out of a 30 s window
    assert [s.time for s in window.samples("p")] == [30.5]
    crowded = MetricsWindow()
    for i in range(1001):
        crowded.add("p", sample(i / 1000))  # 1001 samples within one second
    kept = crowded.samples("p")
    assert len(kept) == 1000 and kept[0].time == 0.001


def test_prompt_tokens_per_finished_request() -> None:
    body = """\
vllm:num_requests_running 1
vllm:num_requests_waiting 0
vllm:prompt_tokens_total 12000
vllm:request_success_total{finished_reason="stop"} 9
vllm:request_success_total{finished_reason="length"} 3
"""
    got = parse_metrics(body, time=0)
    assert (got.prompt_tokens, got.requests_finished) == (12000.0, 12.0)
    window = MetricsWindow(window_s=30)
    for t, prompt, finished in ((0, 12000, 12), (5, 15000, 14), (10, 18000, 16)):
        window.add("p", dataclasses.replace(sample(t), prompt_tokens=prompt, requests_finished=finished))
    summary = window.summary("p", now=10, max_age_s=5)
    assert summary is not None and summary.prompt_tokens_per_request == 1500.0  # 6000 / 4
    idle = MetricsWindow(window_s=30)
    for t in (0, 5):
        idle.add("p", dataclasses.replace(sample(t), prompt_tokens=100, requests_finished=1))
    summary = idle.summary("p", now=5, max_age_s=5)
    assert summary is not None and summary.prompt_tokens_per_request is None  # none finished


def test_one_request_finished_measures_the_prompt_and_fewer_tokens_than_accepted_are_no_steps() -> None:
    window = MetricsWindow(window_s=30)
    for t, prompt, finished in ((0, 0, 0), (5, 700, 1)):
        window.add("p", dataclasses.replace(sample(t), prompt_tokens=prompt, requests_finished=finished))
    summary = window.summary("p", now=5, max_age_s=5)
    assert summary is not None and summary.prompt_tokens_per_request == 700.0
    # generated tokens grew by 2 while accepted draft tokens grew by 5: an inconsistent pair of
    # counters (read at different moments) gives no request-steps rather than a negative count
    odd = MetricsWindow(window_s=30)
    for t, generated, accepted in ((0, 10, 0), (5, 12, 5)):
        odd.add("p", dataclasses.replace(sample(t, accepted=accepted), generation_tokens=generated))
    summary = odd.summary("p", now=5, max_age_s=5)
    assert summary is not None and summary.request_steps is None


def test_a_scraped_sample_cannot_be_changed_by_whoever_holds_it() -> None:
    got = parse_metrics("vllm:num_requests_running 1\nvllm:num_requests_waiting 0\n", time=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.running = 5.0  # type: ignore[misc]


def test_a_decode_step_series_with_odd_labels_first_does_not_hide_the_rest() -> None:
    body = """\
vllm:num_requests_running 1
vllm:num_requests_waiting 0
# TYPE arctic_decode_steps_total counter
arctic_decode_steps_total{batch="",drafting="on"} 5
arctic_decode_steps_total{batch="2",drafting="on"} 7
# TYPE arctic_decode_step_seconds_total counter
arctic_decode_step_seconds_total{batch="2",drafting="sometimes"} 1
arctic_decode_step_seconds_total{batch="2",drafting="on"} 0.5
"""
    steps = parse_metrics(body, time=0).decode_steps
    assert steps is not None and set(steps) == {(2, True)}
    assert (steps[(2, True)].steps, steps[(2, True)].seconds) == (7.0, 0.5)
