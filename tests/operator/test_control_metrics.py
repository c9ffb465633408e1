"""control.metrics: a real vLLM 0.26.0 /metrics body (CPU build, arctic-serve --speculation ngram,
three completions), renamed and partial variants, garbage; the per-pod window."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arctic_operator.control.metrics import (
    MetricsParseError,
    MetricsWindow,
    PodSample,
    counter_increase,
    parse_metrics,
)
from tests.operator.hypo import examples

REAL = (Path(__file__).parent / "data" / "vllm-0.26.0-metrics.txt").read_text()


def sample(
    time: float,
    running: float | None = 1.0,
    waiting: float | None = 0.0,
    drafts: float | None = None,
    draft_tokens: float | None = None,
    accepted: float | None = None,
    kv: float | None = None,
    soft_cap: int | None = None,
) -> PodSample:
    missing = tuple(name for name, value in (("running", running), ("waiting", waiting)) if value is None)
    return PodSample(
        time=time,
        running=running,
        waiting=waiting,
        kv_cache_usage=kv,
        drafts=drafts,
        draft_tokens=draft_tokens,
        accepted_tokens=accepted,
        soft_cap=soft_cap,
        hard_cap=None,
        cap_reported=soft_cap is not None,
        missing=missing,
    )


# --- parse_metrics ---------------------------------------------------------------------------


def test_real_vllm_body_parses_every_quantity() -> None:
    got = parse_metrics(REAL, time=12.5)
    assert got.time == 12.5
    assert got.complete and got.missing == ()
    assert (got.running, got.waiting, got.kv_cache_usage) == (0.0, 0.0, 0.0)
    # the captured counters: 36 drafts of 3 ngram tokens, all accepted (a repeating prompt)
    assert (got.drafts, got.draft_tokens, got.accepted_tokens) == (36.0, 108.0, 108.0)
    # our plugin is on and reports +Inf: no cap
    assert got.cap_reported
    assert (got.soft_cap, got.hard_cap) == (None, None)


def test_finite_caps_are_read() -> None:
    body = REAL.replace("arctic_speculation_soft_cap +Inf", "arctic_speculation_soft_cap 4.0").replace(
        "arctic_speculation_hard_cap +Inf", "arctic_speculation_hard_cap 8.0"
    )
    got = parse_metrics(body, time=0)
    assert (got.soft_cap, got.hard_cap) == (4, 8)


def test_without_our_plugin_no_cap_is_reported() -> None:
    body = "\n".join(line for line in REAL.splitlines() if "arctic_" not in line)
    got = parse_metrics(body, time=0)
    assert not got.cap_reported and got.soft_cap is None
    assert got.complete


def test_older_vllm_name_for_the_kv_cache_is_understood() -> None:
    body = REAL.replace("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc").replace(
        'vllm:gpu_cache_usage_perc{engine="0",model_name="smollm2-135m-instruct"} 0.0',
        'vllm:gpu_cache_usage_perc{engine="0",model_name="smollm2-135m-instruct"} 0.42',
    )
    assert "kv_cache_usage_perc" not in body
    assert parse_metrics(body, time=0).kv_cache_usage == pytest.approx(0.42)


def test_a_body_without_the_waiting_gauge_is_incomplete() -> None:
    body = "\n".join(line for line in REAL.splitlines() if not line.startswith("vllm:num_requests_waiting{"))
    got = parse_metrics(body, time=0)
    assert got.waiting is None
    assert got.missing == ("waiting",)
    assert not got.complete
    assert got.running == 0.0  # the rest is still read


def test_gauges_sum_over_label_sets_and_counters_with_or_without_total() -> None:
    body = """\
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0"} 3
vllm:num_requests_running{engine="1"} 4
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0"} 1
vllm:num_requests_waiting{engine="1"} NaN
# TYPE vllm:spec_decode_num_drafts counter
vllm:spec_decode_num_drafts_total{engine="0"} 10
vllm:spec_decode_num_drafts_total{engine="1"} 5
vllm:spec_decode_num_drafts_created{engine="1"} 1.7e9
vllm:spec_decode_num_draft_tokens_total 30
vllm:spec_decode_num_accepted_tokens 12
"""
    got = parse_metrics(body, time=0)
    assert (got.running, got.waiting) == (7.0, 1.0)
    assert got.drafts == 15.0  # _created left out
    assert got.draft_tokens == 30.0  # untyped, with _total
    assert got.accepted_tokens == 12.0  # untyped, without _total
    assert got.kv_cache_usage is None and not got.cap_reported


def test_empty_body_is_incomplete_not_an_error() -> None:
    assert parse_metrics("", time=0).missing == ("running", "waiting")


@pytest.mark.parametrize(
    "body",
    ["<html><body>502 Bad Gateway</body></html>", '{"running": 3}', "vllm:num_requests_running three"],
)
def test_garbage_is_a_parse_error_with_a_message(body: str) -> None:
    with pytest.raises(MetricsParseError, match=r"not Prometheus text format: .+"):
        parse_metrics(body, time=0)


# --- counters and the window ------------------------------------------------------------------


def test_counter_increase_counts_a_reset_from_zero() -> None:
    assert counter_increase([]) == 0
    assert counter_increase([5]) == 0
    assert counter_increase([5, 8, 10]) == 5
    assert counter_increase([5, 8, 2, 6]) == 3 + 2 + 4  # restarted between 8 and 2


@settings(max_examples=examples(50), deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=1e6), max_size=20))
def test_counter_increase_is_never_negative(values: list[float]) -> None:
    assert counter_increase(values) >= 0


def test_summary_means_deltas_and_acceptance() -> None:
    window = MetricsWindow(window_s=30)
    window.add("p", sample(0, running=2, waiting=0, drafts=100, draft_tokens=300, accepted=150, kv=0.2))
    window.add("p", sample(10, running=4, waiting=2, drafts=110, draft_tokens=330, accepted=165, kv=0.4))
    window.add("p", sample(20, running=6, waiting=4, drafts=120, draft_tokens=360, accepted=180, soft_cap=8))
    got = window.summary("p", now=20, max_age_s=15)
    assert got is not None
    assert got.samples == 3
    assert (got.running, got.waiting, got.waiting_last) == (4.0, 2.0, 4.0)
    assert got.kv_cache_usage == pytest.approx(0.3)  # over the samples that report it
    assert got.drafts == 20
    assert got.acceptance_rate == pytest.approx(30 / 60)
    assert got.accepted_per_draft == pytest.approx(30 / 20)
    assert (got.soft_cap, got.newest) == (8, 20)


def test_summary_without_drafts_has_no_acceptance() -> None:
    window = MetricsWindow(window_s=30)
    window.add("p", sample(0, drafts=7, draft_tokens=21, accepted=9))
    window.add("p", sample(5, drafts=7, draft_tokens=21, accepted=9))
    got = window.summary("p", now=5, max_age_s=10)
    assert got is not None
    assert got.drafts == 0
    assert got.accepted_per_draft is None and got.acceptance_rate is None


def test_summary_counts_across_an_engine_restart() -> None:
    window = MetricsWindow(window_s=60)
    window.add("p", sample(0, drafts=100, draft_tokens=300, accepted=100))
    window.add("p", sample(10, drafts=4, draft_tokens=12, accepted=6))  # restarted
    window.add("p", sample(20, drafts=10, draft_tokens=30, accepted=15))
    got = window.summary("p", now=20, max_age_s=30)
    assert got is not None
    assert got.drafts == 10
    assert got.acceptance_rate == pytest.approx(15 / 30)


def test_old_samples_leave_the_window() -> None:
    window = MetricsWindow(window_s=30)
    window.add("p", sample(0, running=100))
    window.add("p", sample(40, running=2))
    got = window.summary("p", now=40, max_age_s=10)
    assert got is not None and (got.samples, got.running) == (1, 2.0)


def test_stale_or_incomplete_pods_have_no_summary() -> None:
    window = MetricsWindow(window_s=30)
    window.add("stale", sample(0))
    window.add("partial", sample(10, waiting=None))
    assert window.summary("stale", now=20, max_age_s=10) is None
    assert window.summary("partial", now=20, max_age_s=30) is None
    assert window.summary("unknown", now=20, max_age_s=30) is None
    # an incomplete newest sample: the summary is of the complete ones, if fresh enough
    window.add("stale", sample(15, waiting=None))
    got = window.summary("stale", now=15, max_age_s=20)
    assert got is not None and (got.samples, got.newest) == (1, 0)


def test_forget_drops_pods_that_are_gone() -> None:
    window = MetricsWindow()
    window.add("a", sample(0))
    window.add("b", sample(0))
    window.forget(["b", "c"])
    assert window.pods() == ("b",)
    assert window.summary("a", now=0, max_age_s=10) is None


@settings(max_examples=examples(50), deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=5), min_size=1, max_size=200))
def test_the_window_stays_bounded(steps: list[float]) -> None:
    window = MetricsWindow(window_s=10)
    now = 0.0
    for step in steps:
        now += step
        window.add("p", sample(now))
    got = window.summary("p", now=now, max_age_s=1)
    assert got is not None
    assert 1 <= got.samples <= window.max_samples
    assert all(now - 10 <= s.time <= now for s in window.samples("p"))


@pytest.mark.parametrize("bad", ["+Inf", "-Inf", "NaN", "-3.0"])
def test_a_gauge_that_is_not_a_count_is_not_observed(bad: str) -> None:
    # one pod serving +Inf, NaN or a negative gauge: that quantity is "not observed" (the sample is
    # incomplete), never a number that breaks the loop's arithmetic for the whole service
    lines = [
        line if not line.startswith("vllm:num_requests_waiting{") else line.rsplit(" ", 1)[0] + " " + bad
        for line in REAL.splitlines()
    ]
    got = parse_metrics("\n".join(lines), time=0)
    assert got.waiting is None and "waiting" in got.missing and not got.complete
    assert got.running == 0.0
