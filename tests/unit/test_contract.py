"""The runtime/operator contract: our additional_config section, its parsers, and its purity."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arctic_runtime.contract import (
    DEFAULT_SHIFT_THRESHOLD,
    EngineSettings,
    InvalidSetting,
    ParallelSettings,
    SpeculationCap,
    SuffixKeys,
    parse_engine_settings,
    parse_parallel,
    shift_mode,
    speculative_config,
    vllm_plugins_value,
)


def test_absent_section_means_defaults() -> None:
    assert parse_engine_settings(None) == EngineSettings()
    assert parse_engine_settings({"other_plugin": 1}) == EngineSettings()
    assert EngineSettings().to_additional_config() == {"arctic": {}}


def test_settings_round_trip_through_additional_config() -> None:
    settings = EngineSettings(
        speculation=SpeculationCap(2, 6),
        parallel=ParallelSettings(ulysses=2, shift=True, shift_threshold=64, tensor=2),
    )
    additional = settings.to_additional_config()
    assert additional == {
        "arctic": {
            "speculation": {"soft_cap": 2, "hard_cap": 6},
            "parallel": {"ulysses": 2, "shift": True, "shift_threshold": 64, "tensor": 2},
        }
    }
    # what the operator writes on the command line is what every engine process parses back
    assert parse_engine_settings(json.loads(json.dumps(additional))) == settings


def test_errors_name_the_path_and_list_every_bad_field() -> None:
    with pytest.raises(InvalidSetting) as info:
        parse_engine_settings(
            {"arctic": {"speculation": {"soft_cap": -1}, "parallel": {"ulysses": 0, "shift_threshold": 0}}}
        )
    fields = [e.field for e in info.value.errors]
    assert fields == [
        "additional_config.arctic.speculation.soft_cap",
        "additional_config.arctic.parallel.ulysses",
        "additional_config.arctic.parallel.shift_threshold",
    ]
    with pytest.raises(InvalidSetting, match=r"additional_config\.arctic\.spec: unknown section"):
        parse_engine_settings({"arctic": {"spec": {}}})
    with pytest.raises(InvalidSetting, match=r"additional_config\.arctic: must be a JSON object"):
        parse_engine_settings({"arctic": 3})
    with pytest.raises(
        InvalidSetting, match=r"parallel\.ulyses: unknown field; allowed fields: tensor, ulysses"
    ):
        parse_engine_settings({"arctic": {"parallel": {"ulyses": 2}}})


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"ulysses": 0}, "ulysses", "whole number in 1..64"),
        ({"ulysses": 65}, "ulysses", "whole number in 1..64"),
        ({"ulysses": "2"}, "ulysses", "whole number in 1..64"),
        ({"ulysses": True}, "ulysses", "whole number in 1..64"),
        ({"shift": "yes", "ulysses": 2}, "shift", "true or false"),
        ({"shift": True}, "shift", "needs ulysses > 1"),
        ({"shift_threshold": 0}, "shift_threshold", "1..1048576"),
        ({"shift_threshold": -5}, "shift_threshold", "1..1048576"),
        ({"shift_threshold": 2.5}, "shift_threshold", "1..1048576"),
        ({"tensor": 0}, "tensor", ">= 1"),
    ],
)
def test_parallel_settings_refuse_bad_values(data: dict[str, object], field: str, message: str) -> None:
    with pytest.raises(InvalidSetting) as info:
        parse_parallel(data, prefix="p.")
    assert [e.field for e in info.value.errors] == [f"p.{field}"]
    assert message in info.value.errors[0].message


def test_parallel_defaults_are_arctic_inference_defaults() -> None:
    settings = parse_parallel({})
    assert settings == ParallelSettings(ulysses=1, shift=False, shift_threshold=512)
    assert not settings.enabled
    assert DEFAULT_SHIFT_THRESHOLD == 512
    assert parse_parallel({"ulysses": 4}).world_size(2) == 8


@given(
    tokens=st.integers(min_value=0, max_value=1 << 21), threshold=st.integers(min_value=1, max_value=1 << 20)
)
def test_shift_mode_is_tensor_parallel_exactly_at_or_below_the_threshold(tokens: int, threshold: int) -> None:
    shifted = ParallelSettings(ulysses=2, shift=True, shift_threshold=threshold)
    assert shift_mode(tokens, shifted) == ("tp" if tokens <= threshold else "sp")
    # without shift every step is a Ulysses step
    assert shift_mode(tokens, ParallelSettings(ulysses=2, shift_threshold=threshold)) == "sp"


def test_speculative_config_keys_and_defaults() -> None:
    assert speculative_config("none") is None
    assert speculative_config("ngram") == {
        "method": "ngram",
        "num_speculative_tokens": 3,
        "prompt_lookup_max": 4,
        "prompt_lookup_min": 2,
    }
    assert speculative_config("suffix") == {
        "method": "suffix",
        "num_speculative_tokens": 16,
        "suffix_decoding_max_tree_depth": 64,
    }
    assert speculative_config("suffix", 8, SuffixKeys(32, 100, 1.5, 0.2)) == {
        "method": "suffix",
        "num_speculative_tokens": 8,
        "suffix_decoding_max_tree_depth": 32,
        "suffix_decoding_max_cached_requests": 100,
        "suffix_decoding_max_spec_factor": 1.5,
        "suffix_decoding_min_token_prob": 0.2,
    }


def test_vllm_plugins_keeps_what_the_user_listed() -> None:
    assert vllm_plugins_value(None) == "arctic_serve,arctic_serve_admin"
    assert vllm_plugins_value("lora_resolver") == "lora_resolver,arctic_serve,arctic_serve_admin"
    assert vllm_plugins_value("arctic_serve_admin,x") == "arctic_serve_admin,x,arctic_serve"


def test_the_contract_imports_nothing_heavy() -> None:
    """The operator image has no torch or vLLM: the contract must import with the standard library."""
    code = (
        "import sys, arctic_runtime.contract, arctic_operator.plan;"
        "heavy = sorted(m for m in ('torch', 'vllm', 'numpy', 'transformers') if m in sys.modules);"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_swiftkv_settings_round_trip_and_refuse_bad_values() -> None:
    settings = EngineSettings(swiftkv=True, swiftkv_min_saving_tokens=2048)
    additional = settings.to_additional_config()
    assert additional == {"arctic": {"swiftkv": {"enabled": True, "min_saving_tokens": 2048}}}
    assert parse_engine_settings(json.loads(json.dumps(additional))) == settings
    assert EngineSettings(swiftkv=True).to_additional_config() == {"arctic": {"swiftkv": {"enabled": True}}}
    for bad in (0.5, -3, True, "4k"):
        with pytest.raises(InvalidSetting) as info:
            parse_engine_settings({"arctic": {"swiftkv": {"enabled": True, "min_saving_tokens": bad}}})
        (error,) = info.value.errors
        assert error.field == "additional_config.arctic.swiftkv.min_saving_tokens"
        assert "integer >= 1" in error.message
    with pytest.raises(InvalidSetting) as info:
        parse_engine_settings({"arctic": {"swiftkv": {"enable": True}}})
    assert [e.field for e in info.value.errors] == ["additional_config.arctic.swiftkv.enable"]
    assert "allowed: enabled, min_saving_tokens" in info.value.errors[0].message


def test_drafts_in_prefill_steps_defaults_to_true_and_round_trips() -> None:
    assert EngineSettings().drafts_in_prefill_steps is True
    off = EngineSettings(drafts_in_prefill_steps=False)
    assert off.to_additional_config() == {"arctic": {"speculation": {"drafts_in_prefill_steps": False}}}
    assert parse_engine_settings(json.loads(json.dumps(off.to_additional_config()))) == off
    both = EngineSettings(speculation=SpeculationCap(2, 6), drafts_in_prefill_steps=False)
    assert both.section() == {"speculation": {"soft_cap": 2, "hard_cap": 6, "drafts_in_prefill_steps": False}}
    assert parse_engine_settings(both.to_additional_config()) == both
    # true (the default) is accepted when written out and left off the command line
    on = parse_engine_settings({"arctic": {"speculation": {"drafts_in_prefill_steps": True}}})
    assert on == EngineSettings() and on.section() == {}


def test_drafts_in_prefill_steps_must_be_a_boolean() -> None:
    key = "additional_config.arctic.speculation.drafts_in_prefill_steps"
    with pytest.raises(InvalidSetting) as info:
        parse_engine_settings({"arctic": {"speculation": {"drafts_in_prefill_steps": "false"}}})
    assert str(info.value) == f"{key}: must be true or false, got 'false'"
    with pytest.raises(InvalidSetting) as info:
        parse_engine_settings(
            {"arctic": {"speculation": {"drafts_in_prefill_steps": 0, "soft_cap": -1, "draft_in_prefill": 1}}}
        )
    assert [e.field for e in info.value.errors] == [
        "additional_config.arctic.speculation.draft_in_prefill",
        key,
        "additional_config.arctic.speculation.soft_cap",
    ]
    assert info.value.errors[0].message == (
        "unknown field; allowed fields: soft_cap, hard_cap, drafts_in_prefill_steps"
    )
