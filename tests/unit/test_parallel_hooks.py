"""Ulysses / Shift Parallelism adapters: flags, the layout checks, the metrics and admin views."""

from __future__ import annotations

import argparse
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from arctic_runtime import patching
from arctic_runtime.contract import InvalidSetting, ParallelSettings
from arctic_runtime.parallel.hooks import (
    EngineFacts,
    add_parallel_arguments,
    fold_parallel_flags,
    layout_errors,
)
from arctic_runtime.server.admin import parallel_view
from arctic_runtime.server.metrics import ArcticCollector
from arctic_runtime.speculation import DecodeStep, SpeculationCounters

SP2 = ParallelSettings(ulysses=2, shift=True, shift_threshold=256)
LLAMA = EngineFacts(tensor=2, architectures=("LlamaForCausalLM",), num_heads=32, num_kv_heads=8)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_parallel_arguments(parser)
    return parser.parse_args(argv)


def test_arctic_flags_fold_into_the_plugin_section() -> None:
    args = parse(
        "--ulysses-sequence-parallel-size", "4", "--enable-shift-parallel", "--shift-parallel-threshold", "64"
    )
    assert fold_parallel_flags(args, {"other": 1}) == {
        "other": 1,
        "arctic": {"parallel": {"ulysses": 4, "shift": True, "shift_threshold": 64}},
    }
    # no flags: the config is left as it was
    assert fold_parallel_flags(parse(), None) == {}
    # the same value in both places is fine, different values name both
    same = fold_parallel_flags(
        parse("--ulysses-sequence-parallel-size", "2"), {"arctic": {"parallel": {"ulysses": 2}}}
    )
    assert same["arctic"]["parallel"] == {"ulysses": 2}
    with pytest.raises(InvalidSetting) as info:
        fold_parallel_flags(
            parse("--ulysses-sequence-parallel-size", "2"), {"arctic": {"parallel": {"ulysses": 4}}}
        )
    assert str(info.value) == (
        "--ulysses-sequence-parallel-size (additional_config.arctic.parallel.ulysses): the flag says 2, "
        "--additional-config says 4; set it in one place"
    )


def test_a_supported_layout_has_no_errors() -> None:
    assert layout_errors(SP2, LLAMA) == []
    assert layout_errors(ParallelSettings(), EngineFacts(tensor=1)) == []  # Ulysses off: nothing to check


@pytest.mark.parametrize(
    ("facts", "message"),
    [
        (
            EngineFacts(**{**LLAMA.__dict__, "num_heads": 9, "num_kv_heads": 3, "tensor": 1}),
            "the model's 9 attention heads must be divisible by tensor x ulysses = 2 (tensor 1 x ulysses 2)",
        ),
        (
            EngineFacts(**{**LLAMA.__dict__, "pipeline": 2}),
            "cannot be combined with --pipeline-parallel-size 2",
        ),
        (EngineFacts(**{**LLAMA.__dict__, "data": 2}), "cannot be combined with --data-parallel-size 2"),
        (EngineFacts(**{**LLAMA.__dict__, "lora": True}), "cannot be combined with --enable-lora"),
        (
            EngineFacts(**{**LLAMA.__dict__, "vllm_sequence_parallel": True}),
            "cannot be combined with vLLM's own sequence parallelism",
        ),
        (
            EngineFacts(**{**LLAMA.__dict__, "speculation_method": "eagle"}),
            "speculative method 'eagle' needs a draft model",
        ),
        (
            EngineFacts(**{**LLAMA.__dict__, "architectures": ("MixtralForCausalLM",)}),
            "model architecture MixtralForCausalLM is not supported with Ulysses",
        ),
    ],
)
def test_unsupported_layouts_name_the_flag_and_the_rule(facts: EngineFacts, message: str) -> None:
    errors = layout_errors(SP2, facts)
    assert errors and {e.field for e in errors} == {
        "--ulysses-sequence-parallel-size (additional_config.arctic.parallel.ulysses)"
    }
    assert any(message in e.message for e in errors), errors


STATE: dict[str, Any] = {
    "speculation": {
        "soft_cap": None,
        "hard_cap": None,
        "method": None,
        "num_speculative_tokens": 0,
        "drafts_in_prefill_steps": True,
        "counters": {
            "steps": {"open": 0, "soft_capped": 0, "hard_capped": 0, "prefill": 0},
            "steps_drafting": 0,
            "steps_not_drafting": 0,
            "request_steps_drafted": 0,
            "request_steps_dropped": 0,
            "cap_changes": 0,
            "phase_steps": {"prefill": {"on": 0, "off": 0}, "decode": {"on": 0, "off": 0}},
        },
    },
    "parallel": {
        "tensor": 2,
        "ulysses": 2,
        "shift": True,
        "shift_threshold": 256,
        "last_mode": "sp",
        "steps": {"tp": 7, "sp": 3},
        "tokens": {"tp": 90, "sp": 2048},
        "draft_steps": {"tp": 5, "sp": 1},
    },
    "workers": [
        {
            "pid": 11,
            "rank": 0,
            "parallel": {"rank": 0, "tensor_rank": 0, "sequence_rank": 0, "last_mode": "sp"},
        },
        {"pid": 12, "rank": 1},
    ],
}


def test_metrics_show_the_mode_mix_and_the_threshold() -> None:
    collector = ArcticCollector()
    collector.update(STATE)
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    for line in (
        'arctic_parallel_info{shift="true",tensor="2",ulysses="2"} 1.0',
        "arctic_parallel_shift_threshold_tokens 256.0",
        'arctic_parallel_steps_total{mode="tp"} 7.0',
        'arctic_parallel_steps_total{mode="sp"} 3.0',
        'arctic_parallel_tokens_total{mode="sp"} 2048.0',
    ):
        assert line in text.splitlines(), line
    # an engine without Ulysses exports no parallel series
    collector.update({**STATE, "parallel": {**STATE["parallel"], "ulysses": 1}})
    assert "arctic_parallel" not in generate_latest(registry).decode()


def test_admin_view_of_the_layout() -> None:
    view = parallel_view(STATE)
    assert view["steps"] == {"tp": 7, "sp": 3} and view["draft_steps"] == {"tp": 5, "sp": 1}
    assert view["workers"] == [
        {"pid": 11, "rank": 0, "tensor_rank": 0, "sequence_rank": 0, "last_mode": "sp"},
        {"pid": 12, "rank": 1},
    ]


class Owner:
    @staticmethod
    def make(x: int) -> int:
        return x + 1

    @classmethod
    def build(cls, x: int) -> str:
        return f"{cls.__name__}:{x}"


def test_patching_keeps_static_and_class_methods_what_they_are(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    module = SimpleNamespace(Owner=Owner)
    monkeypatch.setitem(sys.modules, "fake_vllm_module", module)
    static = patching.PatchPoint(
        "fake_vllm_module:Owner.make",
        "wrap",
        ("x",),
        "front end",
        "test",
        lambda orig: lambda x: orig(x) * 10,
    )
    klass = patching.PatchPoint(
        "fake_vllm_module:Owner.build",
        "wrap",
        ("cls", "x"),
        "front end",
        "test",
        lambda orig: lambda cls, x: orig(cls, x) + "!",
    )
    try:
        assert patching.apply_all([static, klass]) == [static.target, klass.target]
        assert Owner.make(1) == 20 and Owner().make(1) == 20
        assert Owner.build(3) == "Owner:3!"
        assert patching.apply_all([static, klass]) == []  # idempotent
        assert patching.is_applied(static) and patching.is_applied(klass)
    finally:
        Owner.make = staticmethod(Owner.__dict__["make"].__func__.__arctic_original__)  # type: ignore[method-assign]
        Owner.build = classmethod(Owner.__dict__["build"].__func__.__arctic_original__)  # type: ignore[method-assign,assignment]


def test_vllms_own_sequence_parallelism_is_detected_in_either_config_form() -> None:
    from arctic_runtime.parallel.hooks import _vllm_sp

    assert _vllm_sp({"pass_config": {"enable_sp": True}}) is True
    assert _vllm_sp({}) is False
    assert _vllm_sp(SimpleNamespace(pass_config=SimpleNamespace(enable_sp=False))) is False
    assert _vllm_sp(SimpleNamespace(pass_config=SimpleNamespace(enable_sp=True))) is True


def test_metrics_show_prefill_steps_and_phases() -> None:
    spec = STATE["speculation"]
    counters = {
        **spec["counters"],
        "steps": {"open": 5, "soft_capped": 0, "hard_capped": 0, "prefill": 3},
        "phase_steps": {"prefill": {"on": 0, "off": 3}, "decode": {"on": 4, "off": 1}},
    }
    collector = ArcticCollector()
    collector.update({**STATE, "speculation": {**spec, "counters": counters}})
    registry = CollectorRegistry()
    registry.register(collector)
    lines = generate_latest(registry).decode().splitlines()
    for line in (
        'arctic_speculation_steps_total{mode="prefill"} 3.0',
        'arctic_speculation_phase_steps_total{drafting="off",phase="prefill"} 3.0',
        'arctic_speculation_phase_steps_total{drafting="on",phase="prefill"} 0.0',
        'arctic_speculation_phase_steps_total{drafting="on",phase="decode"} 4.0',
        'arctic_speculation_phase_steps_total{drafting="off",phase="decode"} 1.0',
    ):
        assert line in lines, line


def test_metrics_show_decode_step_timings_by_batch_and_drafting() -> None:
    spec = STATE["speculation"]
    counters = SpeculationCounters()
    counters.record_decode_step(DecodeStep(requests=3, drafting=2, draft_tokens=5), 0.5)
    counters.record_decode_step(DecodeStep(requests=4, drafting=1, draft_tokens=3), 0.25)
    counters.record_decode_step(DecodeStep(requests=1, drafting=0, draft_tokens=0), 0.125)
    collector = ArcticCollector()
    collector.update({**STATE, "speculation": {**spec, "counters": counters.as_dict()}})
    registry = CollectorRegistry()
    registry.register(collector)
    lines = generate_latest(registry).decode().splitlines()
    for line in (
        'arctic_decode_steps_total{batch="4",drafting="on"} 2.0',
        'arctic_decode_step_seconds_total{batch="4",drafting="on"} 0.75',
        'arctic_decode_step_requests_total{batch="4",drafting="on"} 7.0',
        'arctic_decode_step_drafting_requests_total{batch="4",drafting="on"} 3.0',
        'arctic_decode_step_draft_tokens_total{batch="4",drafting="on"} 8.0',
        'arctic_decode_steps_total{batch="1",drafting="off"} 1.0',
        'arctic_decode_step_seconds_total{batch="1",drafting="off"} 0.125',
        'arctic_decode_step_requests_total{batch="1",drafting="off"} 1.0',
        'arctic_decode_steps_total{batch="512",drafting="off"} 0.0',
    ):
        assert line in lines, line
    # five series, each with every bucket (10) and drafting state (2), buckets in numeric order
    samples = [line for line in lines if line.startswith("arctic_decode_")]
    assert len(samples) == 5 * 10 * 2
    batches = [line.split('"')[1] for line in samples if line.startswith("arctic_decode_steps_total")]
    assert batches == [b for b in ("1", "2", "4", "8", "16", "32", "64", "128", "256", "512") for _ in "xy"]
    # an engine too old to report them: no decode-step series, the rest as before
    collector.update(STATE)
    text = generate_latest(registry).decode()
    assert "arctic_decode_" not in text and "arctic_speculation_phase_steps_total" in text
