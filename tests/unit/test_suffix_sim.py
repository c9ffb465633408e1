"""The suffix decoding simulator and its ``arctic-serve suffix-sim`` command (no engine)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from arctic_runtime.cli import main
from arctic_runtime.suffix import SuffixConfig
from arctic_runtime.suffix.sim import (
    RESULT_KEYS,
    TraceError,
    TraceRequest,
    arctic_available,
    load_trace,
    simulate,
)
from arctic_runtime.suffix.tree import native_available
from tests.unit.suffix_backends import NATIVE_MISSING, NATIVE_REQUIRED


def edit_trace(requests: int = 5, seed: int = 0) -> list[TraceRequest]:
    """Code-edit style: the prompt is a file of repeated "code lines", the output the same file with a
    few lines changed."""
    rng = random.Random(seed)
    lines = [[rng.randrange(1000, 5000) for _ in range(rng.randrange(6, 14))] for _ in range(30)]
    trace = []
    for _ in range(requests):
        file_lines = [lines[rng.randrange(len(lines))] for _ in range(20)]
        edited = list(file_lines)
        for _ in range(3):
            edited[rng.randrange(len(edited))] = [rng.randrange(5000, 9000) for _ in range(8)]
        prompt = [1, 2, 3] + [tok for line in file_lines for tok in line]
        trace.append(TraceRequest(prompt, [tok for line in edited for tok in line]))
    return trace


def random_trace(requests: int = 4, seed: int = 1) -> list[TraceRequest]:
    rng = random.Random(seed)
    return [
        TraceRequest(
            [rng.randrange(100_000) for _ in range(50)], [rng.randrange(100_000) for _ in range(120)]
        )
        for _ in range(requests)
    ]


def write_trace(path: Path, trace: list[TraceRequest]) -> Path:
    path.write_text("".join(json.dumps({"prompt": r.prompt, "output": r.output}) + "\n" for r in trace))
    return path


def test_repetitive_edit_trace_accepts_several_tokens_per_step() -> None:
    trace = edit_trace()
    result = simulate(trace, SuffixConfig())
    assert tuple(result) == (*RESULT_KEYS, "backend")
    assert result["backend"] == ("native" if native_available() else "python")
    assert result["requests"] == len(trace)
    assert result["output_tokens"] == sum(len(r.output) for r in trace)
    assert result["tokens_per_step"] > 1.5
    assert result["tokens_per_step"] == pytest.approx(result["output_tokens"] / result["steps"])
    # Every step produces its accepted draft tokens plus one (except a request's very last step
    # when the draft ran to the end of the output).
    assert result["tokens_per_step"] <= result["mean_accepted_per_step"] + 1 + 1e-9
    assert 0 < result["accept_rate"] <= 1
    assert result["mean_draft_len"] >= result["mean_accepted_per_step"]
    assert result["us_per_speculate"] > 0 and result["us_per_update"] > 0


def test_trace_without_repetition_gives_about_one_token_per_step() -> None:
    result = simulate(random_trace(), SuffixConfig())
    assert 1.0 <= result["tokens_per_step"] < 1.05


def test_disabling_the_global_tree_changes_only_what_other_requests_contribute() -> None:
    same = [edit_trace(requests=1, seed=3)[0]] * 3  # identical requests: the global tree helps
    with_global = simulate(same, SuffixConfig())
    without = simulate(same, SuffixConfig(max_cached_requests=0))
    assert with_global["steps"] < without["steps"]


@pytest.mark.skipif(not native_available() and not NATIVE_REQUIRED, reason=NATIVE_MISSING)
def test_both_backends_accept_the_same_tokens() -> None:
    trace = edit_trace(requests=6, seed=5)
    python, native = (simulate(trace, SuffixConfig(), backend=b) for b in ("python", "native"))
    assert (python["backend"], native["backend"]) == ("python", "native")
    timings = {"us_per_speculate", "us_per_update", "backend"}
    assert {k: v for k, v in python.items() if k not in timings} == {
        k: v for k, v in native.items() if k not in timings
    }


def test_cli_prints_one_json_object(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = write_trace(tmp_path / "t.jsonl", edit_trace(requests=2))
    assert (
        main(["suffix-sim", "--trace", str(trace), "--max-spec-tokens", "8", "--min-token-prob", "0.2"]) == 0
    )
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 1
    result = json.loads(out)
    assert tuple(result) == (*RESULT_KEYS, "backend") and result["requests"] == 2
    assert result["backend"] in {"native", "python"}


def test_cli_runs_without_vllm_or_torch(tmp_path: Path) -> None:
    trace = write_trace(tmp_path / "t.jsonl", edit_trace(requests=1))
    code = (
        "import sys; from arctic_runtime.cli import main; rc = main(['suffix-sim', '--trace', sys.argv[1]]); "
        "heavy = [m for m in ('vllm', 'torch') if m in sys.modules]; "
        "assert not heavy, heavy; sys.exit(rc)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(trace)], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert set(json.loads(proc.stdout)) == {*RESULT_KEYS, "backend"}


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"prompt": [1], "output": [2]}', '{"prompt": [1], '], "t.jsonl:2: not valid JSON"),
        (['{"prompt": [1], "output": [2]}', "", '{"prompt": [1]}'], "t.jsonl:3: expected an object"),
        (['{"prompt": [1], "output": ["a"]}'], "t.jsonl:1: 'output' must be a list of non-negative integer"),
        (['{"prompt": -1, "output": [2]}'], "t.jsonl:1: 'prompt' must be a list"),
        (["[1, 2]"], "t.jsonl:1: expected an object"),
        ([""], "t.jsonl: no requests in trace"),
    ],
)
def test_bad_trace_lines_give_one_line_naming_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], lines: list[str], message: str
) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(TraceError, match=message):
        load_trace(path)
    assert main(["suffix-sim", "--trace", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith(f"arctic-serve: error: {path}")
    assert message in captured.err


def test_cli_missing_file_and_bad_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.jsonl"
    assert main(["suffix-sim", "--trace", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{missing}: cannot read trace" in err
    trace = write_trace(tmp_path / "t.jsonl", edit_trace(requests=1))
    assert main(["suffix-sim", "--trace", str(trace), "--min-token-prob", "2"]) == 2
    assert (
        capsys.readouterr().err
        == "arctic-serve: error: --min-token-prob: must be a number in 0..1, got 2.0\n"
    )


def test_compare_arctic_needs_arctic_inference(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if arctic_available():
        pytest.skip("arctic_inference is installed; the not-installed path cannot be exercised")
    trace = write_trace(tmp_path / "t.jsonl", edit_trace(requests=1))
    assert main(["suffix-sim", "--trace", str(trace), "--compare-arctic"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "arctic_inference.suffix_decoding is not importable" in err
