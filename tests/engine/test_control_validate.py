"""The simulator's validation tool end to end on CPU (bench/control_validate.py): the real SmolLM2
behind ``arctic-serve serve``, the probe, one 20 s segment of steady replayed open loop while the
operator's ServiceController ticks against the engine, and the prediction for the same requests.

A smoke run (the file says ``validation: false``): it shows that the tool measures, drives the
caps through the admin API and writes the issue's keys, not that the CPU numbers agree."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bench.control_validate import PERCENTILE_KEYS, TOLERANCE

from tests.conftest import engine_env

pytestmark = pytest.mark.engine
REPO = Path(__file__).resolve().parents[2]


def test_cpu_dry_run_replays_a_segment_with_the_cap_controller_in_the_loop(
    tmp_path: Path, smollm2_dir: Path
) -> None:
    out = tmp_path / "results"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.control_validate",
            "--device",
            "cpu",
            "--traces",
            "steady",
            "--segment-s",
            "20",
            "--out",
            str(out),
        ],
        cwd=REPO,
        env=engine_env(False),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    files = list(out.glob("control-validation-*.json"))
    assert len(files) == 1, proc.stderr[-2000:]
    result: dict[str, Any] = json.loads(files[0].read_text())
    assert result["kind"] == "control-validation" and result["validation"] is False
    assert result["setting"]["device"] == "cpu" and result["setting"]["calibration"] == "served"
    assert result["setting"]["speculation"]["k"] == 3
    assert result["setting"]["speculation"]["synthetic_acceptance_rates"] is None
    assert result["setting"]["speculation"]["accepted_per_step"] is None
    assert result["setting"]["kv_capacity_tokens"] > 0  # read from the engine's log
    # the probe's step windows are kept beside the prediction made from them, and the served
    # calibration is written on its own (a CPU one: the simulator's loader takes GPU files only)
    probe = result["setting"]["probe"]
    assert [w["batch"] for w in probe["vanilla"]] == [w["batch"] for w in probe["drafting"]] == [1, 2, 4, 8]
    assert [w["batch"] for w in probe["long_vanilla"]] == [8] and probe["long_vanilla"][0]["prompt"] == 320
    assert all(w["step_s"] > 0 and w["steps"] >= 2 for w in probe["vanilla"] + probe["drafting"])
    assert probe["prefill_tokens"] == [128, 256, 384, 480] and len(probe["prefill_ttft_s"]) == 4
    [served_path] = out.glob("control-served-*.json")
    served = json.loads(served_path.read_text())
    assert served["device"] == "cpu" and served["probe"] == probe
    assert served["calibration"]["decode_batches"] == [1, 2, 4, 8]
    assert all(s > 0 for s in served["calibration"]["decode_step_s"])
    assert served["calibration"]["prefill_s_per_token"] > 0 and served["calibration"]["kv_s_per_token"] >= 0
    assert (
        result["setting"]["prediction_calibration"]["decode_step_s"] == served["calibration"]["decode_step_s"]
    )
    [trace] = result["traces"]
    assert trace["trace"] == "steady" and trace["segment"]["duration_s"] == 20
    assert trace["requests"] == sum(trace["request_classes"].values()) > 0
    assert trace["failed"] == 0, trace["first_error"]
    assert trace["predicted_unfinished"] == 0
    assert sum(b["requests"] for b in trace["by_arrival"]) == trace["requests"]
    for side in ("measured", "predicted"):
        got = trace[side]
        assert set(got) == set(PERCENTILE_KEYS)
        assert 0 < got["p50_ttft_s"] <= got["p95_ttft_s"] and 0 < got["p50_tpot_s"] <= got["p95_tpot_s"]
    for key in PERCENTILE_KEYS:
        ratio = trace["predicted"][key] / trace["measured"][key]
        assert trace["ratio"][key] == pytest.approx(ratio, abs=1e-3)
    within = all(abs(r - 1) <= TOLERANCE + 1e-9 for r in trace["ratio"].values())
    assert trace["within_15pct"] is within
    # the operator's controller ticked every 5 s against the engine and its caps reached it
    controller = trace["controller"]
    assert controller["ticks"] >= 3 and controller["scrape_errors"] == 0
    assert controller["pushes"].get("ok", 0) >= 1 and "error" not in controller["pushes"]
    assert trace["measured_drafts"] > 0  # the engine drafted (soft cap 64 at the start)
    # on CPU the real model decides acceptance: the prediction takes the replay's measured one
    assert not math.isnan(trace["measured_accepted_per_draft"])
    assert trace["predicted_accepted_per_step"] == pytest.approx(
        trace["measured_accepted_per_draft"], abs=1e-3
    )
