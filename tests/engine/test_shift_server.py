"""Arctic Inference's parallel flags on a real vLLM server launch, the admin API's parallel view,
the arctic_parallel_* metrics, and the one-line startup errors for layouts that cannot run."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from arctic_runtime.launcher import cpu_thread_binding
from arctic_runtime.models import head_padded_copy
from arctic_runtime.server.metrics import POLL_INTERVAL_S
from tests.conftest import engine_env
from tests.engine.server import metric_sum, serve

pytestmark = pytest.mark.engine

THRESHOLD = 16
LONG_PROMPT = "The lighthouse keeper climbed the stairs, trimmed the wick and polished the lens. " * 8


def start_error(model: Path, *flags: str) -> str:
    """The last line a vLLM server launch prints when it refuses the flags."""
    proc = subprocess.run(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model), *flags],
        env=engine_env(True),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode != 0
    return proc.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--ulysses-sequence-parallel-size", "2"],
            "--ulysses-sequence-parallel-size (additional_config.arctic.parallel.ulysses): "
            "the model's 9 attention heads must be divisible by tensor x ulysses = 2 (tensor 1 x ulysses 2)",
        ),
        (
            ["--enable-shift-parallel"],
            "--enable-shift-parallel (additional_config.arctic.parallel.shift): Shift "
            "Parallelism needs ulysses > 1 (--ulysses-sequence-parallel-size)",
        ),
        (
            ["--ulysses-sequence-parallel-size", "2", "--shift-parallel-threshold", "0"],
            "--shift-parallel-threshold (additional_config.arctic.parallel.shift_threshold): "
            "must be a whole number of tokens in 1..1048576, got 0",
        ),
    ],
)
def test_layouts_that_cannot_run_fail_at_startup_naming_the_flag(
    smollm2_dir: Path, flags: list[str], message: str
) -> None:
    line = start_error(smollm2_dir, *flags)  # "(APIServer pid=N) arctic_runtime.contract.InvalidSetting: ..."
    assert "InvalidSetting: " in line and message in line, line


def test_arctic_flags_on_a_vllm_launch_serve_in_both_modes(smollm2_dir: Path, tmp_path: Path) -> None:
    padded = head_padded_copy(smollm2_dir, smollm2_dir.parent / f"{smollm2_dir.name}-heads12", 12, 4)
    flags = [
        "--ulysses-sequence-parallel-size",
        "2",
        "--enable-shift-parallel",
        "--shift-parallel-threshold",
        str(THRESHOLD),
    ]
    binding = cpu_thread_binding(2, sorted(os.sched_getaffinity(0)))
    with serve(
        tmp_path,
        "--model",
        str(padded),
        "--served-model-name",
        "smollm2-135m-instruct",
        "--",
        *flags,  # after --: vLLM's own parser, with the plugin's flags added
        env={"VLLM_CPU_OMP_THREADS_BIND": binding},
    ) as server:
        assert "Paris" in server.complete("The capital of France is", 8)
        server.complete(LONG_PROMPT + "What did the keeper do?", 8)  # a prefill of > 16 tokens
        status, view = server.request("GET", "/arctic/v1/parallel")
        assert status == 200, view
        assert (view["tensor"], view["ulysses"], view["shift"], view["shift_threshold"]) == (
            1,
            2,
            True,
            THRESHOLD,
        )
        # the long prefill ran in sequence mode; the short prefill and the decode steps in tensor mode
        assert view["steps"]["sp"] >= 1 and view["steps"]["tp"] >= 2, view["steps"]
        assert view["tokens"]["sp"] > THRESHOLD * view["steps"]["sp"]
        assert view["tokens"]["tp"] <= THRESHOLD * view["steps"]["tp"]
        ranks = sorted((w["tensor_rank"], w["sequence_rank"]) for w in view["workers"])
        assert ranks == [(0, 0), (0, 1)]
        assert all(w["weights_bytes"]["shift"] > 0 for w in view["workers"])
        status, _ = server.request("GET", "/arctic/v1/parallel", token="wrong")
        assert status == 401
        time.sleep(2 * POLL_INTERVAL_S)  # the API server mirrors the engine's counters every second
        samples = server.metrics()
        assert metric_sum(samples, "arctic_parallel_steps_total", mode="tp") == view["steps"]["tp"]
        assert metric_sum(samples, "arctic_parallel_steps_total", mode="sp") == view["steps"]["sp"]
        assert metric_sum(samples, "arctic_parallel_shift_threshold_tokens") == THRESHOLD
        assert metric_sum(samples, "arctic_parallel_info", tensor="1", ulysses="2", shift="true") == 1
