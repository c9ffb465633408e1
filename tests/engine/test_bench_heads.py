"""Issue 14's GPU measurements of draft heads, our side end to end on CPU with the real vLLM and
SmolLM2: the ``heads-cpu`` suite (heads-8b's dry run), ``bench.arctic_hybrid`` (Arctic's engine
reported as not run, with its reason, beside our rows), and Arctic Inference 0.3.0's own speculator
code reading the checkpoint layout we write for it (its sdist, fetched from PyPI once and
hash-checked)."""

from __future__ import annotations

import hashlib
import os
import tarfile
import urllib.request
from pathlib import Path

import pytest

from arctic_runtime.models import default_cache_dir
from tests.engine.conftest import REPO, run_bench, run_module

pytestmark = pytest.mark.engine
SDIST_NAME = "arctic_inference-0.3.0.tar.gz"
#: Arctic Inference 0.3.0's sdist on PyPI (pip cannot download it: its setup.py needs CUDA torch).
SDIST_URL = (
    "https://files.pythonhosted.org/packages/63/c1/573fa2f00097cd9cc1167b31fd900b2482f58f3491867cebdd5516626533/"
    + SDIST_NAME
)
SDIST_SHA256 = "7f22e3e1b1071c6061c0d6951be17c0fb50b08d06d6e543144c8f52faba60a36"


def arctic_sdist() -> Path:
    """The sdist: ARCTIC_INFERENCE_SDIST, the GPU files' copy (.gpu-files), or fetched from PyPI
    once into the arctic-serve cache; hash-checked."""
    candidates = [Path(p) for p in (os.environ.get("ARCTIC_INFERENCE_SDIST"),) if p]
    candidates += [REPO / ".gpu-files" / SDIST_NAME, default_cache_dir() / SDIST_NAME]
    for path in candidates:
        if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == SDIST_SHA256:
            return path
    target = default_cache_dir() / SDIST_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(SDIST_URL, timeout=120) as response:
        data = response.read()
    assert hashlib.sha256(data).hexdigest() == SDIST_SHA256, f"{SDIST_URL}: sha256 mismatch"
    partial = target.with_suffix(f".part{os.getpid()}")
    partial.write_bytes(data)
    partial.replace(target)
    return target


def test_heads_cpu_suite_times_steps_and_the_drafter(tmp_path: Path, smollm2_dir: Path) -> None:
    run = run_bench(["bench", "run", "--suite", "heads-cpu"], tmp_path, "heads-cpu-*.json")
    assert run["complete"] and Path(run["head"]).name == "smollm2-lstm-head"
    engines = run["engines"]
    assert engines["arctic-inference-head"] == {"error": "not run: arctic_inference is not importable"}
    for name in ("vanilla", "arctic-serve-head"):
        for case in engines[name]["cases"].values():
            assert case["runner"].endswith("CPUModelRunner")
            assert case["step_ms"]["median"] > 0 and case["steps"]["median"] >= 8
    assert not any("draft_ms" in c for c in engines["vanilla"]["cases"].values())
    # what vLLM made of the arguments: ours runs behind method suffix, which vLLM schedules
    # synchronously (the step cost this puts on the host: suite heads-8b-sync)
    settings = engines["arctic-serve-head"]["settings"]
    assert (settings["speculative_method"], settings["num_speculative_tokens"]) == ("suffix", 3)
    assert settings["async_scheduling"] is False and settings["enforce_eager"] is True
    assert engines["vanilla"]["settings"]["speculative_method"] is None
    ours = engines["arctic-serve-head"]["cases"]["batch-4-32-8"]
    assert ours["draft_ms"]["calls"] == ours["head_counters"]["steps"] > 0  # one drafting call a step
    assert ours["head_counters"]["head_drafts"] > 0 and ours["draft_ms"]["per_step"] > 0
    rows = run["implied"]["engines"]["arctic-serve-head"]
    assert set(rows) == {"batch-1-32-8", "batch-4-32-8"} and "composed" in rows["batch-1-32-8"]


def test_arctic_hybrid_run_keeps_our_rows_and_says_why_arctic_did_not_run(
    tmp_path: Path, smollm2_dir: Path
) -> None:
    argv = ["bench.arctic_hybrid", "--device", "cpu", "--max-requests", "2", "--max-tokens", "24"]
    run = run_bench(argv, tmp_path, "speculator-accept-*.json")
    assert run["kind"] == "speculator-accept" and run["complete"]
    assert "KeyError: 'forget_proj.0.weight'" in run["arctic_hybrid"]
    assert run["engines"]["arctic-hybrid"]["error"].startswith("not run: arctic_inference is not importable")
    rows = {r["trace"]: r for r in run["rows"]}
    assert set(rows) == {"heldout-chat", "heldout-code", "edit", "mixed"}
    for r in rows.values():
        assert r["method"] == "hybrid-engine" and r["tokens"] == 23 * r["requests"]
        assert r["drafts"] == r["steps"] > 0  # the hybrid drafts every step (the head is the fallback)
        assert r["tokens_per_step"] >= 1.0
    # where each answer parts from the trace (None: identical), one entry per request
    first_diff = run["engines"]["hybrid-engine"]["first_diff"]
    assert {t: len(d) for t, d in first_diff.items()} == {t: rows[t]["requests"] for t in first_diff}
    assert all(d is None or 0 <= d < 24 for ds in first_diff.values() for d in ds)


def test_arctic_inference_reads_the_layout_we_write_and_drafts_as_ours(
    tmp_path: Path, smollm2_dir: Path
) -> None:
    with tarfile.open(arctic_sdist()) as tar:
        tar.extractall(tmp_path, filter="data")
    from bench.arctic_hybrid import HEAD, arctic_copy

    exported = arctic_copy(HEAD, str(smollm2_dir), tmp_path / "exported")
    request = {
        "source": str(tmp_path / "arctic_inference-0.3.0"),
        "ours": str(HEAD),
        "exported": str(exported),
        "base": str(smollm2_dir),
    }
    result = run_module("tests.engine.arctic_loader_runner", request, enabled=False, VLLM_PLUGINS="")
    assert result["method"] == "arctic" and result["archs"] == ["ArcticLSTMSpeculatorPreTrainedModel"]
    assert result["ours_as_is"] == "KeyError: 'forget_proj.0.weight'"
    assert result["arctic"] == result["ours"]
