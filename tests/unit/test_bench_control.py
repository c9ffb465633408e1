"""The control-loop simulator (bench/control.py): conservation, caps, capacity, accounting, output."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
from bench import control
from bench.control import Calibration, Cluster, Trace

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
    assert all(s > 0 for s in cal.decode_step_s) and all(c > 1 for c in cal.verify_cost)
    assert set(cal.accepted_per_step) == set(control.CLASS_WEIGHTS)
    assert all(".json" in text for text in cal.sources.values())
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
    assert control.step_time_s(cal, 16, 16, 0) > control.step_time_s(cal, 16, 8, 0) > plain[1]
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
        assert re.fullmatch(r"ours|static-cap-\d+|keda-waiting-5", row["policy"])
        assert row["p50_ttft_s"] <= row["p95_ttft_s"] <= row["p95_e2e_s"]
        assert row["gpu_seconds"] > 0


def test_cli_quick_smoke(tmp_path: Path) -> None:
    png = tmp_path / "control.png"
    assert control.main(["--quick", "--out", str(tmp_path), "--jobs", "1", "--plot", str(png)]) == 0
    for trace in control.TRACES:
        rows = json.loads((tmp_path / f"control-{trace}.json").read_text())
        assert isinstance(rows, list) and len(rows) == len(control.POLICIES)
        assert all(set(r) >= REQUIRED_KEYS and r["trace"] == trace and r["unfinished"] == 0 for r in rows)
    config = json.loads((tmp_path / "control-config.json").read_text())
    assert config["quick"] is True and config["calibration"]["sources"]
    assert png.stat().st_size > 1000
    assert control.main(["--traces", "nope", "--out", str(tmp_path)]) == 2
