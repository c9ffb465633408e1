"""The control-loop simulator (bench/control.py): conservation, caps, capacity, accounting, output."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
from bench import control
from bench.control import Calibration, Cluster, Trace

from arctic_operator.control.loop import ControlLoop
from arctic_operator.control.metrics import StepTotals

REQUIRED_KEYS = {"policy", "trace", "p50_ttft_s", "p95_ttft_s", "p95_e2e_s", "gpu_seconds"}


@pytest.fixture(scope="module")
def cal() -> Calibration:
    return control.load_calibration()


class Fixed:
    """A controller that never changes anything (replicas stay as started)."""

    def __init__(self, caps: tuple[int | None, int | None] = (None, None)) -> None:
        self.tick_s = 5.0
        self.caps = caps

    def initial_caps(self) -> tuple[int | None, int | None]:
        return self.caps

    def tick(self, now: float, cluster: Cluster) -> None:
        return None


def _short(name: str, seconds: float) -> Trace:
    trace = control.TRACES[name]
    return trace.scaled(seconds / trace.duration_s)


def test_calibration_comes_from_the_result_files(cal: Calibration) -> None:
    assert cal.decode_batches[0] == 1 and cal.decode_batches[-1] == 256
    assert all(s > 0 for s in cal.decode_step_s)
    assert set(cal.verify_cost) == {1, 3, 5}
    assert all(c > 1 for curve in cal.verify_cost.values() for c in curve)
    assert (
        set(cal.by_draft_cap) == {1, 3, 5, 16}
        and cal.by_draft_cap[16]["edit"][0] == cal.accepted_per_step["edit"]
    )
    assert set(cal.accepted_per_step) == set(control.CLASS_WEIGHTS)
    assert all(".json" in text for what, text in cal.sources.items() if what != "cold_engine_start_s")
    assert "gpu.md" in cal.sources["cold_engine_start_s"]  # an estimate until calibrate.sh runs
    assert "verify-8b-" in cal.sources["verify_cost"]


def test_every_arrival_completes_once(cal: Calibration) -> None:
    trace = _short("bursty", 180)
    requests = control.generate_requests(trace, cal, seed=1)
    assert len(requests) > 500
    result = control.simulate("ours", trace, cal, seed=1, requests=requests)
    assert result.completed == result.requests == len(requests)
    assert len(result.ttft_s) == len(result.e2e_s) == len(requests)
    assert all(0 < ttft <= e2e for ttft, e2e in zip(result.ttft_s, result.e2e_s, strict=True))


def test_static_cap_zero_never_drafts(cal: Calibration) -> None:
    trace = _short("steady", 90)
    requests = control.generate_requests(trace, cal, seed=2)
    never = control.simulate("static-cap-0", trace, cal, requests=requests)
    always = control.simulate("static-cap-64", trace, cal, requests=requests)
    assert never.drafted_fraction == 0
    assert always.drafted_fraction > 0.5
    # drafting pays at these batch sizes with the measured acceptance: requests finish sooner
    assert control.percentile(always.e2e_s, 50) < control.percentile(never.e2e_s, 50)


def test_caps_decide_who_drafts() -> None:
    assert control.drafting_slots(10, None, None) == 10
    assert control.drafting_slots(10, 4, None) == 4
    assert control.drafting_slots(10, 4, 10) == 0
    assert control.drafting_slots(9, 4, 10) == 4
    assert control.drafting_slots(3, 0, None) == 0


def test_step_time_grows_with_batch_and_drafting(cal: Calibration) -> None:
    plain = [control.step_time_s(cal, b, 0, 0) for b in (1, 16, 64, 128, 256)]
    assert plain == sorted(plain) and plain[-1] > 2 * plain[0]
    assert control.step_time_s(cal, 16, 16 * 0.4, 0) > control.step_time_s(cal, 16, 8 * 0.4, 0) > plain[1]
    assert control.step_time_s(cal, 16, 16 * 0.4, 0) == pytest.approx(plain[1] * 1.4)
    assert control.step_time_s(cal, 16, 0, 1000) == pytest.approx(plain[1] + 1000 * cal.prefill_s_per_token)


def test_more_replicas_lower_ttft_under_the_same_load(cal: Calibration) -> None:
    trace = Trace("load", "steady", duration_s=60, base_rate=30, peak_rate=30)
    requests = control.generate_requests(trace, cal, seed=3)
    p95 = {}
    for replicas in (1, 3):
        run = control.simulate(
            "fixed", replace(trace, initial_replicas=replicas), cal, requests=requests, controller=Fixed()
        )
        assert run.completed == len(requests)
        p95[replicas] = control.percentile(run.ttft_s, 95)
    assert p95[3] < p95[1] / 2


def test_gpu_seconds_add_up(cal: Calibration) -> None:
    trace = Trace("two", "steady", duration_s=60, base_rate=5, peak_rate=5, initial_replicas=2)
    fixed = control.simulate("fixed", trace, cal, controller=Fixed())
    assert fixed.gpu_seconds == pytest.approx(2 * fixed.end_s)
    assert fixed.end_s >= 59
    scaled = control.simulate("keda-waiting-5", _short("bursty", 600), cal)
    assert scaled.max_replicas > 1
    assert scaled.gpu_seconds == pytest.approx(sum(stop - start for start, stop in scaled.pods))
    assert scaled.end_s <= scaled.gpu_seconds <= scaled.max_replicas * scaled.end_s


def test_same_seed_same_rows_other_seed_other_rows(cal: Calibration) -> None:
    trace = _short("diurnal", 120)
    a, b = (control.simulate("ours", trace, cal, seed=5).row() for _ in range(2))
    c = control.simulate("ours", trace, cal, seed=6).row()
    assert a == b
    assert a != c


def test_rows_have_the_issues_keys_and_policy_names(cal: Calibration) -> None:
    results = control.run_all([_short("steady", 60)], cal, seed=0)
    rows = [run.row() for run in results["steady"]]
    assert [r["policy"] for r in rows] == list(control.POLICIES)
    assert "ours" in control.POLICIES and "keda-waiting-5" in control.POLICIES
    for row in rows:
        assert set(row) >= REQUIRED_KEYS
        assert row["trace"] == "steady"
        assert re.fullmatch(r"ours|static-cap-(\d+|none)|schedule-[\w-]+|keda-waiting-5", row["policy"])
        assert row["p50_ttft_s"] <= row["p95_ttft_s"] <= row["p95_e2e_s"]
        assert row["gpu_seconds"] > 0


def test_cli_quick_smoke(tmp_path: Path) -> None:
    png = tmp_path / "control.png"
    policies = ["ours", "static-cap-none", "schedule-k5-8-k3-32", "keda-waiting-5"]
    argv = [
        "--quick",
        "--out",
        str(tmp_path),
        "--jobs",
        "1",
        "--plot",
        str(png),
        "--policies",
        ",".join(policies),
    ]
    assert control.main(argv) == 0
    for trace in control.TRACES:
        rows = json.loads((tmp_path / f"control-{trace}.json").read_text())
        assert isinstance(rows, list) and [r["policy"] for r in rows] == policies
        assert all(set(r) >= REQUIRED_KEYS and r["trace"] == trace and r["unfinished"] == 0 for r in rows)
    config = json.loads((tmp_path / "control-config.json").read_text())
    assert config["quick"] is True and config["calibration"]["sources"]
    assert png.stat().st_size > 1000
    assert control.main(["--traces", "nope", "--out", str(tmp_path)]) == 2


def test_the_simulated_operator_is_the_operators_control_loop(cal: Calibration) -> None:
    ours = control.make_controller("ours", cal=cal)
    assert isinstance(ours, control.OperatorController)
    assert isinstance(ours.loop, ControlLoop)
    assert ours.loop.cap_policy is not None and ours.loop.cap_policy.costs == cal.costs()
    assert ours.loop.replica_policy is not None and ours.loop.replica_policy.burst_headroom == 1
    assert ours.loop.cap_policy.ttft_budget == 0.01  # the CR's default ttftBudgetPercent, 1
    # the CR's default runningRequestsAsUndrafted, priced with the calibration's verify costs
    assert ours.loop.replica_policy.running_as_undrafted is True
    assert ours.loop.replica_policy.costs == cal.costs()
    unbudgeted = control.make_controller("ours-no-ttft-budget", cal=cal)
    assert isinstance(unbudgeted, control.OperatorController) and unbudgeted.loop.cap_policy is not None
    assert unbudgeted.loop.cap_policy == replace(ours.loop.cap_policy, ttft_budget=None)
    fixed = control.make_controller("static-cap-none", cal=cal)
    assert isinstance(fixed, control.OperatorController)
    assert fixed.loop.cap_policy is None and fixed.initial_caps() == (None, None)
    schedule = control.make_controller("schedule-k5-8-k3-32", cal=cal)
    assert isinstance(schedule, control.OperatorController) and schedule.schedule == ((8, 5), (32, 3))
    with pytest.raises(ValueError, match="unknown policy"):
        control.make_controller("schedule-nope")
    # ours with every pod's drafts cut to 3 tokens: ours' own cap policy, one length at any batch
    short = control.make_controller("ours-draft-3", cal=cal)
    assert isinstance(short, control.OperatorController) and short.loop.cap_policy == ours.loop.cap_policy
    assert short.schedule == ((256, 3),) and short.initial_caps() == ours.initial_caps() == (64, None)
    assert ours.schedule is None
    for unmeasured in ("ours-draft-16", "ours-draft-4", "ours-draft-"):
        with pytest.raises(ValueError, match="unknown policy"):
            control.make_controller(unmeasured)


def test_schedules_pick_the_draft_length_by_running_requests() -> None:
    schedule = ((8, 5), (32, 3))
    assert [control.schedule_draft_cap(schedule, b) for b in (1, 8, 9, 32, 33)] == [5, 5, 3, 3, 0]


def test_each_class_pays_the_verify_cost_of_its_own_draft_length(cal: Calibration) -> None:
    table = control.draft_table(cal)
    edit, chat = table[16]["edit"], table[16]["chat-repeat"]
    assert edit.draft_len > 3 > 1.5 > chat.draft_len
    assert edit.cost == cal.costs().model_for(edit.draft_len)
    assert edit.cost.cost(16) > chat.cost.cost(16)
    assert table[1]["edit"].accepted < table[3]["edit"].accepted < table[16]["edit"].accepted


def _h200_run(
    path: Path, engines: dict[str, tuple[float, float]], start: float, prefix_caching: bool = False
) -> None:
    """A control-h200 result file: engine -> (tpot scale, ttft ms); tpot = 5 ms x scale x (1 + b / 256)."""
    batches = (1, 4, 16, 64, 128, 256)
    cases = [
        {"name": f"batch-{b}-128-64", "kind": "latency", "num_prompts": b, "input_len": 128} for b in batches
    ]
    cases.append({"name": "prefill-2048", "kind": "latency", "num_prompts": 1, "input_len": 2048})
    result = {
        "config": {"cases": cases, "engine_args": {"enable_prefix_caching": prefix_caching}},
        "engines": {
            name: {
                "start_s": start + i,
                "cases": {
                    **{
                        f"batch-{b}-128-64": {"tpot_ms": {"median": 5 * scale * (1 + b / 256)}}
                        for b in batches
                    },
                    "prefill-2048": {"ttft_ms": {"median": ttft}, "tpot_ms": {"median": 5.0}},
                },
            }
            for i, (name, (scale, ttft)) in enumerate(engines.items())
        },
    }
    path.write_text(json.dumps(result))


def test_the_h200_calibration_comes_from_calibrate_sh_files(tmp_path: Path) -> None:
    for name in ("verify-8b", "overhead-8b", "throughput-8b", "suffix-accept"):  # acceptance etc.
        for source in control.RESULTS.glob(f"{name}-2*.json"):
            (tmp_path / source.name).write_text(source.read_text())
    _h200_run(
        tmp_path / "control-h200-20261202T150000Z.json", {"vanilla": (1.0, 102.4), "verify-k3": (1.3, 0)}, 170
    )
    _h200_run(
        tmp_path / "control-h200-20261202T150400Z.json",
        {"verify-k1": (1.2, 0), "vanilla-restart": (1.0, 0)},
        60,
    )
    cal = control.load_calibration_h200(tmp_path)
    assert cal.gpu == "H200" and cal.decode_batches == (1, 4, 16, 64, 128, 256)
    assert cal.decode_step_s[0] == pytest.approx(5e-3 * (1 + 1 / 256))
    assert cal.verify_cost[3] == pytest.approx((1.3,) * 6)
    assert cal.verify_cost[1] == pytest.approx((1.2,) * 6)  # against vanilla-restart of its own run
    assert cal.prefill_s_per_token == pytest.approx(0.1024 / 2048)
    assert (cal.engine_start_s, cal.cold_engine_start_s) == (61, 170)
    assert "control-h200-20261202T150400Z.json" in cal.sources["engine_start_s"]
    out = tmp_path / "h200.json"
    assert control.main(["--calibration", "h200", "--results", str(tmp_path), "--write-costs", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["gpu"] == "H200" and written["verifyCost"]["3"] == [1.3] * 6
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"run bench/gpu/calibrate\.sh"):
        control.load_calibration_h200(empty)


def test_a_prefill_timed_with_prefix_caching_on_is_not_used(tmp_path: Path) -> None:
    """The first H200 calibration ran with prefix caching on, and its prefill prompt was a cache hit:
    prefill then comes from vanilla's 2k prompt in a swiftkv-8b run (prefix caching off), or the
    calibration refuses, saying why."""
    for name in ("verify-8b", "overhead-8b", "throughput-8b", "suffix-accept"):
        for source in control.RESULTS.glob(f"{name}-2*.json"):
            (tmp_path / source.name).write_text(source.read_text())
    _h200_run(
        tmp_path / "control-h200-20261202T150000Z.json",
        {"vanilla": (1.0, 15.0), "verify-k3": (1.3, 0)},
        170,
        prefix_caching=True,
    )
    with pytest.raises(FileNotFoundError, match=r"prefix caching on \(a cache hit\)"):
        control.load_calibration_h200(tmp_path)
    swiftkv = {
        "config": {"cases": [{"name": "prompt-2k", "kind": "latency", "num_prompts": 1, "input_len": 2000}]},
        "engines": {"vanilla": {"start_s": 30.0, "cases": {"prompt-2k": {"ttft_ms": {"median": 51.0}}}}},
    }
    (tmp_path / "swiftkv-8b-20261203T111317Z.json").write_text(json.dumps(swiftkv))
    # a later swiftkv-8b run does not move the calibration: its source is pinned
    later = {**swiftkv, "engines": {"vanilla": {"cases": {"prompt-2k": {"ttft_ms": {"median": 60.0}}}}}}
    (tmp_path / "swiftkv-8b-20261204T164953Z.json").write_text(json.dumps(later))
    cal = control.load_calibration_h200(tmp_path)
    assert cal.prefill_s_per_token == pytest.approx(0.051 / 2000)
    assert cal.sources["prefill_s_per_token"].startswith("swiftkv-8b-20261203T111317Z.json vanilla prompt-2k")
    assert control.H200_PREFILL_RUN == "swiftkv-8b-20261203T111317Z.json"


def test_the_served_calibration_is_the_pinned_probe_not_the_newest() -> None:
    """The committed served results came from SERVED_RUN's probe; 2026-12-04's validation at the
    knee wrote a newer probe, which must not move them (it did, before the pin)."""
    assert control.SERVED_RUN == "control-served-20261203T211517Z.json"
    assert sorted(control.RESULTS.glob("control-served-2*.json"))[-1].name != control.SERVED_RUN
    assert control.load_calibration_served().sources["decode_step_s"].startswith(control.SERVED_RUN)


def test_a_replayed_replica_count_overrides_the_policy(cal: Calibration) -> None:
    trace = _short("steady", 120)
    requests = control.generate_requests(trace, cal, seed=3)
    reference = control.make_controller("static-cap-0", cal=cal)
    assert isinstance(reference, control.OperatorController)
    control.simulate("static-cap-0", trace, cal, seed=3, requests=requests, controller=reference)
    replayed = control.make_controller("ours", cal=cal)
    assert isinstance(replayed, control.OperatorController)
    replayed.replay_replicas = [5, 5, 3]  # then the last one, 3, for every later tick
    control.simulate("ours", trace, cal, seed=3, requests=requests, controller=replayed)
    assert replayed.replica_log[:4] == [5, 5, 3, 3] and set(replayed.replica_log[2:]) == {3}
    assert len(reference.replica_log) == len(replayed.replica_log) > 10


def test_ours_prices_drafts_in_prefill_steps_as_the_engines_do(cal: Calibration) -> None:
    ours = control.make_controller("ours", cal=cal, drafts_with_prefill=False)
    assert isinstance(ours, control.OperatorController) and ours.loop.cap_policy is not None
    assert ours.loop.cap_policy.drafts_with_prefill is False
    assert ours.loop.cap_policy.ttft_budget == 0.01  # the CR's default
    costs = cal.costs()
    assert costs.prefill_s_per_token == cal.prefill_s_per_token
    assert costs.decode_step_s == cal.decode_step_s[: len(cal.verify_batches)]


def test_scrapes_count_prompt_tokens_and_finished_requests(cal: Calibration) -> None:
    trace = _short("steady", 60)
    requests = control.generate_requests(trace, cal, seed=4)
    cluster = Cluster(cal, control.EngineConfig(), Fixed((0, None)), 1, pod_start_s=0.0)
    cluster.run(requests, 3600.0)
    pod = cluster.pods[0]
    sample = pod.sample(cluster.now).pod_sample()
    assert sample.requests_finished == len(requests)
    assert sample.prompt_tokens == sum(r.prompt_tokens for r in requests)
    # never drafting: one token per decode request-step, every output token after the first
    assert sample.generation_tokens == sum(r.output_tokens - 1 for r in requests)
    drafting = Cluster(cal, control.EngineConfig(), Fixed((None, None)), 1, pod_start_s=0.0)
    drafting.run(requests, 3600.0)
    pod = drafting.pods[0]
    sample = pod.sample(drafting.now).pod_sample()
    assert sample.accepted_tokens is not None and sample.accepted_tokens > 0
    assert sample.generation_tokens == pytest.approx(pod.decode_request_steps + sample.accepted_tokens)


def flat_cal(**changes: object) -> Calibration:
    """10 ms per decode step at any batch, 0.1 ms of prefill per prompt token, verify cost 1.5."""
    cal = Calibration(
        decode_batches=(1, 256),
        decode_step_s=(0.01, 0.01),
        verify_batches=(1, 256),
        verify_cost={3: (1.5, 1.5)},
        prefill_s_per_token=1e-4,
        engine_start_s=60.0,
        accepted_per_step=dict.fromkeys(control.CLASS_WEIGHTS, 1.5),
        draft_len=dict.fromkeys(control.CLASS_WEIGHTS, 3.0),
        by_draft_cap={16: dict.fromkeys(control.CLASS_WEIGHTS, (1.5, 3.0))},
    )
    return replace(cal, **changes)  # type: ignore[arg-type]


def _replica(cal: Calibration, max_num_seqs: int = 4, budget: int = 100) -> control.Replica:
    engine = control.EngineConfig(max_num_seqs=max_num_seqs, max_num_batched_tokens=budget)
    return control.Replica(0, 0.0, 0.0, cal, engine, (0, 0), control.draft_table(cal))


def _live(rid: int, prompt: int, output: int) -> control._Live:
    return control._Live(control.Request(rid, 0.0, prompt, output, "edit", 1.5), prompt, float(output - 1))


def test_waiting_requests_are_admitted_only_with_a_chunk_of_the_steps_budget() -> None:
    """vLLM 0.26's V1 scheduler: the running requests take the budget first; a waiting request
    joins the running ones only when a chunk of its prompt fits in this step, else it stays
    waiting (and the scrape counts it as waiting)."""
    pod = _replica(flat_cal())
    pod.waiting.extend(_live(i, 60, 3) for i in range(3))
    # step 1: r0 gets 60 tokens, r1 the 40 left of the 100-token budget, r2 waits
    assert pod.plan(0.0) == pytest.approx(0.01)  # 100 prefill tokens x 0.1 ms, nobody decoding
    assert [live.req.id for live in pod.running] == [0, 1] and [w.req.id for w in pod.waiting] == [2]
    assert pod._chunks == [60, 40]
    sample = pod.sample(0.005)
    assert (sample.running, sample.waiting) == (2, 1)
    assert pod.finish_epoch() == []
    assert pod.running[0].first_token_at == pytest.approx(0.01) and pod.running[1].first_token_at is None
    # step 2: r0 decodes (1 token), r1 its last 20, then r2 is admitted with 60 of the 79 left
    assert pod.plan(0.01) == pytest.approx(0.01 + 0.01 + 80 * 1e-4)
    assert [live.req.id for live in pod.running] == [0, 1, 2] and not pod.waiting
    assert pod._chunks == [0, 20, 60] and pod._rates == [1.0, 0.0, 0.0]
    pod.finish_epoch()
    assert [live.first_token_at for live in pod.running] == pytest.approx([0.01, 0.028, 0.028])


def test_a_full_batch_keeps_the_next_request_waiting_until_one_finishes() -> None:
    pod = _replica(flat_cal(), max_num_seqs=2, budget=1000)
    pod.waiting.extend(_live(i, 10, 3) for i in range(3))
    assert pod.plan(0.0) == pytest.approx(20 * 1e-4)  # r0 and r1 prefill together; r2 has no slot
    assert (len(pod.running), len(pod.waiting)) == (2, 1)
    pod.finish_epoch()
    # both decode their 2 remaining tokens in one epoch of 2 steps; r2 still waits
    assert pod.plan(0.002) == pytest.approx(0.002 + 2 * 0.01)
    assert pod.steps == 2 and len(pod.waiting) == 1
    assert len(pod.finish_epoch()) == 2
    assert pod.plan(0.022) == pytest.approx(0.022 + 10 * 1e-4) and not pod.waiting


def test_a_decode_step_pays_for_its_requests_contexts() -> None:
    """Attention reads every decoding request's KV cache each step: kv_s_per_token x their context
    tokens (prompt + output so far) on top of the batch's step; drafts do not multiply it."""
    cal = flat_cal(kv_s_per_token=1e-4)
    assert control.step_time_s(cal, 4, 0.0, 0, 1000) == pytest.approx(0.01 + 0.1)
    # 4 decoding, 2 of them drafting at cost 1.5: the batch part x (1 + 2 x 0.5 / 4), the contexts once
    assert control.step_time_s(cal, 4, 1.0, 0, 1000) == pytest.approx(0.01 * 1.25 + 0.1)
    pod = _replica(cal)
    pod.waiting.append(_live(0, 50, 3))
    assert pod.plan(0.0) == pytest.approx(0.005)  # 50 prompt tokens
    pod.finish_epoch()
    # 51 tokens in its cache (prompt + first token): 2 steps of 10 ms + 51 x 0.1 ms
    assert pod.plan(0.005) == pytest.approx(0.005 + 2 * (0.01 + 51e-4))
    [done] = pod.finish_epoch()
    assert done.done_at == pytest.approx(0.0352)


def test_scrapes_count_decode_only_steps_as_the_runtime_does() -> None:
    """The simulated pod's arctic_decode_step* counters: decode-only steps by batch bucket and
    drafting, with the epoch's step time; a step that carries prefill is not counted, and a scrape
    within an epoch counts its steps done so far."""
    pod = control.Replica(
        0, 0.0, 0.0, flat_cal(), control.EngineConfig(), (None, None), control.draft_table(flat_cal())
    )
    pod.waiting.extend(_live(i, 10, 20) for i in range(3))
    pod.plan(0.0)  # the three prompts: prefill, not counted
    pod.finish_epoch()
    assert pod.sample(0.003).decode_steps == {}
    end = pod.plan(0.003)  # 3 decoding, all drafting 3 tokens at cost 1.5: 10 ms x 1.5 a step
    assert end is not None and pod.step_s == pytest.approx(0.015)
    assert pod.sample(0.003 + 2.5 * 0.015).decode_steps == {
        (4, True): StepTotals(steps=2, seconds=0.03, requests=6, drafting=6, draft_tokens=18)
    }
    pod.finish_epoch()
    counted = pod.sample(end).decode_steps[(4, True)]
    assert counted.steps == pod.steps and counted.seconds == pytest.approx(pod.steps * 0.015)
    assert counted.requests == 3 * pod.steps and counted.draft_tokens == 9 * pod.steps
    # with drafting off: the same steps counted as plain ones
    plain = control.Replica(
        0, 0.0, 0.0, flat_cal(), control.EngineConfig(), (0, 0), control.draft_table(flat_cal())
    )
    plain.waiting.extend(_live(i, 10, 20) for i in range(3))
    plain.plan(0.0)
    plain.finish_epoch()
    plain.plan(0.003)
    plain.finish_epoch()
    assert plain.sample(1.0).decode_steps == {
        (4, False): StepTotals(steps=plain.steps, seconds=plain.steps * 0.01, requests=3 * plain.steps)
    }
    assert plain.sample(1.0).pod_sample().decode_steps == plain.sample(1.0).decode_steps


def test_a_marginal_prefill_cost_pays_the_steps_fixed_cost_once() -> None:
    """prefill_marginal: prefill_s_per_token is the slope of TTFT over a step's prompt tokens; a step
    with prefill only also pays the batch-1 decode step (weights, launch), a mixed step does not
    pay it twice."""
    marginal = flat_cal(prefill_marginal=True)
    assert control.step_time_s(marginal, 0, 0.0, 1000) == pytest.approx(0.01 + 0.1)
    assert control.step_time_s(marginal, 3, 0.0, 1000) == pytest.approx(0.01 + 0.1)
    assert control.step_time_s(flat_cal(), 0, 0.0, 1000) == pytest.approx(0.1)
    assert control.step_time_s(marginal, 0, 0.0, 0) == 0.0


def test_the_servers_path_adds_to_every_ttft_and_e2e() -> None:
    trace = Trace("t", "steady", 20, 2, 2)
    plain = control.simulate("static-cap-0", trace, flat_cal(), running_target=None)
    slow = control.simulate("static-cap-0", trace, flat_cal(request_overhead_s=0.05), running_target=None)
    assert slow.ttft_s == pytest.approx([t + 0.05 for t in plain.ttft_s])
    assert slow.e2e_s == pytest.approx([t + 0.05 for t in plain.e2e_s])


def _served_file(path: Path, device: str = "gpu") -> None:
    record = {
        "kind": "control-served-calibration",
        "device": device,
        "calibration": {
            "decode_batches": [1, 256],
            "decode_step_s": [0.007, 0.014],
            "verify_batches": [1, 256],
            "verify_cost": {"3": [1.1, 2.0]},
            "kv_s_per_token": 3e-8,
            "prefill_s_per_token": 2.4e-5,
            "prefill_marginal": True,
            "prefill_intercept_s": 0.012,
            "request_overhead_s": 0.005,
            "accepted_per_step": 1.72,
            "engine_start_s": 92.0,
            "kv_capacity_tokens": 893000,
            "gpu": "H200",
        },
        "sources": {"decode_step_s": "probe of this run: closed batches"},
    }
    path.write_text(json.dumps(record))


def test_the_served_calibration_comes_from_the_validation_runs_probe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("verify-8b", "overhead-8b", "throughput-8b", "suffix-accept"):  # acceptance etc.
        for source in control.RESULTS.glob(f"{name}-2*.json"):
            (tmp_path / source.name).write_text(source.read_text())
    run = "control-served-20261204T100000Z.json"
    with pytest.raises(FileNotFoundError, match=r"run bench/gpu/validate\.sh"):
        control.load_calibration_served(tmp_path, run)
    _served_file(tmp_path / "control-served-20261204T110000Z.json", device="cpu")  # a dry run: not used
    with pytest.raises(FileNotFoundError, match=r"not a GPU control-served file"):
        control.load_calibration_served(tmp_path, "control-served-20261204T110000Z.json")
    _served_file(tmp_path / run)
    _served_file(tmp_path / "control-served-20261205T100000Z.json")  # a later run does not move it
    cal = control.load_calibration_served(tmp_path, run)
    assert (cal.decode_batches, cal.decode_step_s) == ((1, 256), (0.007, 0.014))
    assert (cal.kv_s_per_token, cal.prefill_s_per_token, cal.request_overhead_s) == (3e-8, 2.4e-5, 0.005)
    assert cal.prefill_marginal and cal.kv_capacity_tokens == 893000 and cal.gpu == "H200"
    assert cal.verify_cost == {3: (1.1, 2.0)}  # no offline curves to scale other draft lengths by
    assert cal.engine_start_s == cal.cold_engine_start_s == 92.0
    assert cal.accepted_per_step == control.load_calibration(tmp_path).accepted_per_step
    # with the offline H200 files: k = 1 is the served k = 3 curve scaled by their (k1 - 1) / (k3 - 1)
    _h200_run(
        tmp_path / "control-h200-20261202T150000Z.json", {"vanilla": (1.0, 102.4), "verify-k3": (1.5, 0)}, 170
    )
    _h200_run(
        tmp_path / "control-h200-20261202T150400Z.json",
        {"verify-k1": (1.2, 0), "vanilla-restart": (1.0, 0)},
        60,
    )
    cal = control.load_calibration_served(tmp_path, run)
    assert cal.verify_cost[3] == (1.1, 2.0)
    assert cal.verify_cost[1] == pytest.approx((1 + 0.1 * 0.4, 1 + 1.0 * 0.4))
    assert (cal.engine_start_s, cal.cold_engine_start_s) == (61, 170)
    assert "k=1 scaled from k=3" in cal.sources["verify_cost"]
    out = tmp_path / "served.json"
    monkeypatch.setattr(control, "SERVED_RUN", run)
    assert (
        control.main(["--calibration", "served", "--results", str(tmp_path), "--write-costs", str(out)]) == 0
    )
    assert json.loads(out.read_text())["verifyCost"]["3"] == [1.1, 2.0]
