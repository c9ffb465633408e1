"""The SwiftKV recipe's pure parts: which tokens carry the KL, and the command a report names."""

from __future__ import annotations

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
