"""spec.extraArgs read as vLLM 0.26's FlexibleArgumentParser reads them: every spelling that would
override a flag the operator sets is refused, with the argument named; other flags pass."""

from __future__ import annotations

import pytest

from arctic_operator.engine_args import managed_spellings
from arctic_operator.validation import EXTRA_ARGS_AS_VLLM_READS_THEM, FieldError, validate
from tests.operator.test_validation import changed


@pytest.mark.parametrize(
    "args",
    [
        ["--tensor_parallel_size", "2"],  # _ for -
        ["--tensor-parallel", "2"],  # abbreviation (argparse allow_abbrev)
        ["--po=9000"],  # abbreviation with =
        ["--speculative-config.method", "ngram"],  # dotted key into the JSON flag
        ["--speculative_config.num_speculative_tokens=9"],
        ["--config", "/etc/vllm.yaml"],  # a file whose keys become flags
        ["--additional-config", "{}"],  # the plugin's section, planned by the operator
        ["-tp2"],  # a short option with its value attached
    ],
)
def test_managed_flags_in_any_spelling_vllm_accepts_are_refused(args: list[str]) -> None:
    assert managed_spellings(args) == [args[0]]
    obj = changed({"spec.extraArgs": args})
    errors = validate(obj)
    assert [e.field for e in errors] == ["spec.extraArgs"]
    if errors[0].message == EXTRA_ARGS_AS_VLLM_READS_THEM:  # (exact spellings: the CRD's own rule)
        assert errors[0] == FieldError("spec.extraArgs", EXTRA_ARGS_AS_VLLM_READS_THEM, f"got {args[0]}")


@pytest.mark.parametrize(
    "args",
    [
        ["--model-impl", "transformers"],  # starts like --model, but is another flag
        ["--max-num-seqs", "64", "--max_model_len=1024"],
        ["--enforce-eager", "--dtype", "float32"],
        ["--compilation-config.level", "0"],  # dotted key into an unmanaged JSON flag
        ["-O0"],
    ],
)
def test_other_flags_pass(args: list[str]) -> None:
    assert managed_spellings(args) == []
    assert validate(changed({"spec.extraArgs": args})) == []
