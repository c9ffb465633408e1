"""The findings in docs/benchmarks.md and README's suffix paragraph are checked against bench/results:
a reference renders the field it names, and a number that is not in a result file fails the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bench.claims import ClaimError, check_quoted, loader, measured_numbers, render
from bench.report import README, write_report

REPO = Path(__file__).resolve().parents[2]

RUN = {
    "engines": {
        "vanilla": {"cases": {"batch-1": {"tpot_ms": {"median": 6.5, "min": 6.4}}}},
        "ours": {"cases": {"batch-1": {"tpot_ms": {"median": 2.6, "min": 2.5}}}},
    },
    "ratios": {"ours/vanilla": {"batch-1.tpot_ms": 0.4}},
    "rows": [{"round": "1", "side": "head", "us": 140.0}, {"round": "1", "side": "base", "us": 350.0}],
    "rate": 0.968,
    "flag": True,
}


@pytest.fixture
def results(tmp_path: Path) -> Path:
    (tmp_path / "run-1.json").write_text(json.dumps(RUN))
    return tmp_path


def test_references_render_the_fields_they_name(results: Path) -> None:
    template = (
        "<!-- ref R = run-1 -->\n"
        "- ours {{R:engines.ours.cases.batch-1.tpot_ms.median|.2f}} ms vs "
        '{{run-1:engines.vanilla.cases["batch-1"].tpot_ms.median|.1f}} ms: '
        "{{R:engines.vanilla.cases.batch-1.tpot_ms.median / R:engines.ours.cases.batch-1.tpot_ms.median|.2f}}"
        "x, "
        '{{R:ratios["ours/vanilla"]["batch-1.tpot_ms"]|.1f}}x, head {{R:rows[round=1,side=head].us|.0f}} us, '
        "{{R:rate|.1%}} accepted, best {{min(R:rows[0].us, R:rows[1].us) * 2|.0f}} us, batch 64\n"
    )
    text, claims = render(template, loader(results))
    assert text == (
        "- ours 2.60 ms vs 6.5 ms: 2.50x, 0.4x, head 140 us, 96.8% accepted, best 280 us, batch 64\n"
    )
    assert [c.text for c in claims] == ["2.60", "6.5", "2.50", "0.4", "140", "96.8%", "280"]


@pytest.mark.parametrize(
    ("reference", "problem"),
    [
        ("{{R:engines.ours.cases.batch-2.tpot_ms.median}}", "no 'batch-2' there"),
        ("{{missing-run:rate}}", "missing-run.json not found"),
        ("{{R:flag}}", "not a number"),
        ("{{R:engines.ours}}", "not a number"),
        ("{{R:rate; import os}}", "not an arithmetic expression"),
        ("{{R:rate.__class__}}", "no '__class__' there"),
        ("{{__import__('os')}}", "no reference"),
        ("{{R:rate + len(R:rate)}}", "only + - * /"),
        ("{{R:rows[side=nobody].us}}", "no (('side', 'nobody'),) there"),
    ],
)
def test_a_reference_that_does_not_resolve_fails(results: Path, reference: str, problem: str) -> None:
    with pytest.raises(ClaimError, match="findings not backed") as info:
        render(f"<!-- ref R = run-1 -->\n- value {reference}\n", loader(results))
    assert problem in str(info.value)


def test_a_measured_number_written_by_hand_fails(results: Path) -> None:
    template = "- ours 2.60 ms, {{run-1:rate|.2f}} accepted\n- 4.9x faster, 97% accepted, ~2x, 8,137 GPU-s\n"
    with pytest.raises(ClaimError) as info:
        render(template, loader(results))
    message = str(info.value)
    for number in ("'2.60 ms'", "'4.9x'", "'97%'", "'2x'", "'8,137'"):
        assert number in message
    assert "line 1" in message and "line 2" in message


def test_settings_versions_names_and_code_are_not_measurements() -> None:
    text = (
        "batch 64, 16-token drafts, 12 prompts in 4 rounds, vLLM 0.26, Arctic Inference 0.3.0, Python 3.11, "
        "H100, Llama-3.1-8B, SmolLM2-135M, 2026-11-26, k=5, `--depth 0.5`, [doc](v1.5/x.md), commit 5e3280e"
    )
    assert measured_numbers(text) == []
    assert [n for _, n in measured_numbers("0.2-0.9% more, 6-8x less, 300 us, 1.95x.")] == [
        "0.2",
        "0.9%",
        "8x",
        "300 us",
        "1.95x",
    ]


def test_an_unchecked_item_is_rendered_with_a_visible_note(results: Path) -> None:
    template = "- **Control** <!-- claims: unchecked (being redone) -->: 40-70% fewer GPU-seconds\n- ok\n"
    text, _ = render(template, loader(results))
    assert "not yet checked against bench/results: being redone" in text and "40-70%" in text


def test_quoted_numbers_must_be_rendered_ones(results: Path) -> None:
    _, claims = render("- {{run-1:rate|.1%}} and {{run-1:rows[0].us|.1f}} us\n", loader(results))
    readme = "Fast (4.9x!) <!-- claims -->\n- 96.8% accepted, 140.0 us per step, batch 64\n<!-- /claims -->\n"
    assert check_quoted(readme, claims, "README.md") == []
    bad = readme.replace("140.0 us", "141 us").replace("96.8%", "97%")  # an integer with a unit counts too
    problems = check_quoted(bad, claims, "README.md")
    assert len(problems) == 2 and all("README.md line 2" in p for p in problems)
    assert "'97%'" in problems[0] and "'141 us'" in problems[1]


def test_the_report_checks_the_real_findings_and_readme(tmp_path: Path) -> None:
    """What `make bench-report` does on the repository: every reference in bench/report_intro.md
    resolves in bench/results, no measured number is hand-written, and README's checked suffix
    paragraph quotes only rendered numbers."""
    path = write_report(REPO / "bench" / "results", tmp_path / "docs", README)
    text = path.read_text()
    assert "{{" not in text and "<!-- ref" not in text
    assert "## What the runs below show" in text
    bad_readme = tmp_path / "README.md"
    bad_readme.write_text(
        README.read_text().replace("<!-- /claims -->", "and 4.9x faster.\n<!-- /claims -->")
    )
    with pytest.raises(ClaimError, match=r"'4\.9x' is not a number the findings render"):
        write_report(REPO / "bench" / "results", tmp_path / "docs2", bad_readme)
    assert not (tmp_path / "docs2" / "benchmarks.md").exists()
