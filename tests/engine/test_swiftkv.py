"""SwiftKV in a real vLLM engine (CPU build, plugin on) on the real SmolLM2, float32.

The checkpoint is SmolLM2 with L_kv = 15 and random SwiftKV projections (the initialisation plus
noise of half its spread, so the SwiftKV layers visibly change the answers): written by the
recipe's own export (``write_model_folder``), loaded by ``LlamaSwiftKVForCausalLM`` under the
published weight names.

* vLLM's log-probabilities of its greedy tokens equal the plain-PyTorch SwiftKV forward
  (``arctic_runtime.train.llama``) on the same weights, and every greedy token is the reference's
  argmax: 22 prompts of 1 to 364 tokens in one batch, chunked prefill at 64 batched tokens,
  prefix caching on;
* with suffix decoding on top, the greedy tokens are the same;
* L_kv = number of layers (nothing replaced) gives the base model's tokens and log-probabilities;
* SwiftKV asked for a model that is not a SwiftKV checkpoint, or an L_kv out of range, stops the
  engine start with one line naming the setting.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from arctic_runtime.train.llama import SwiftKVLlama, load_folder
from arctic_runtime.train.swiftkv import write_model_folder
from tests.conftest import engine_env
from tests.engine.conftest import REPO, run_module, run_parallel
from tests.engine.prompts import PARALLEL_MAX_TOKENS, PARALLEL_PROMPTS

pytestmark = pytest.mark.engine

LKV = 15
#: Nats. float32 on both sides; a wrong K/V source or layer is off by >> 0.1.
LOGPROB_ATOL = 2e-3
ENGINE = {"max_num_batched_tokens": 64, "enable_prefix_caching": True}
SUFFIX = {"method": "suffix", "num_speculative_tokens": 8, "suffix_decoding_max_tree_depth": 32}


def swiftkv_folder(base: Path, out: Path, lkv: int, noise: float = 0.5) -> Path:
    if (out / "config.json").exists():
        return out
    config, state = load_folder(base)
    init = SwiftKVLlama(config, state, lkv).swiftkv_state(torch.float32)
    gen = torch.Generator().manual_seed(0)
    delta = {
        k: (v + noise * v.std() * torch.randn(v.shape, generator=gen)).to(torch.bfloat16)
        for k, v in init.items()
    }
    return write_model_folder(base, delta, lkv, out)


def generate(model: Path, **engine: Any) -> dict[str, Any]:
    body = {
        "model": str(model),
        "prompts": PARALLEL_PROMPTS,
        "max_tokens": PARALLEL_MAX_TOKENS,
        "engine_args": {**ENGINE, **engine.pop("engine_args", {})},
        **engine,
    }
    return run_module("tests.engine.parallel_runner", body, enabled=True, timeout=900)


@pytest.fixture(scope="module")
def swiftkv_dir(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return swiftkv_folder(smollm2_dir, tmp_path_factory.mktemp("swiftkv") / f"lkv{LKV}", LKV)


@pytest.fixture(scope="module")
def served(swiftkv_dir: Path) -> dict[str, Any]:
    """torch.compile on (vLLM's default; CPU has no CUDA graphs): decode steps run the compiled
    model, steps with a prompt chunk the saving path. The suffix test below runs eager mode."""
    return generate(
        swiftkv_dir,
        # every step with a prompt chunk takes the saving path (the default needs 1024 rows)
        additional_config={"arctic": {"swiftkv": {"enabled": True, "min_saving_tokens": 1}}},
        engine_args={"enforce_eager": False},
    )


def test_prefill_steps_skip_the_later_layers_rows(served: dict[str, Any]) -> None:
    # the engine compiled the model, not eager mode: vLLM's CPU build traces the whole model once
    # (CompilationMode.DYNAMO_TRACE_ONCE = 2; GPUs run VLLM_COMPILE = 3, piecewise with CUDA graphs)
    assert served["compilation"]["mode"] == 2
    (worker,) = served["engine"]["workers"]
    # 22 prompts of 1-364 tokens in 64-token chunks: every step with a prompt chunk of more than
    # one token takes the saving path; decode-only steps do not
    assert worker["swiftkv"]["saving_steps"] >= 10
    # vLLM's CPU attention: the later layers' caches written by vLLM's own per-layer op (the
    # one-launch Triton write is CUDA's), attention from the kept rows only in every saving step
    assert worker["swiftkv"]["saving_paths"] == {"per-layer": worker["swiftkv"]["saving_steps"]}
    prompt_tokens = sum(len(p) for p in served["prompt_token_ids"])
    assert worker["swiftkv"]["rows_skipped"] >= prompt_tokens // 2


def test_rows_are_each_requests_last_rows_then_discarded_filler() -> None:
    from arctic_runtime.swiftkv.rows import pick_rows

    starts = torch.tensor([0, 5, 6, 8, 8], dtype=torch.int32)  # lengths 5, 1, 2, 0 (a padding request)
    one = pick_rows(starts, 1, 10)
    assert one.index.tolist() == [4, 5, 7, 0]
    assert one.target.tolist() == [4, 5, 7, 10]  # the empty request keeps nothing: one filler row
    assert one.query_start.tolist() == [0, 1, 2, 3, 3]
    # 3 rows per request: a request keeps its last min(rows, 3), in order, request after request;
    # the 12 - 6 filler rows at the end go to row 8, one past the step's rows, which is dropped
    three = pick_rows(starts, 3, 8)
    assert three.index.tolist() == [2, 3, 4, 5, 6, 7, 0, 0, 0, 0, 0, 0]
    assert three.target.tolist() == [2, 3, 4, 5, 6, 7, 8, 8, 8, 8, 8, 8]
    assert three.query_start.tolist() == [0, 3, 4, 6, 6]
    assert (three.per_request, three.num_requests) == (3, 4)


def test_saving_path_calls_the_fused_kernels_and_restores_the_compiled_choice() -> None:
    """Under torch.compile vLLM dispatches its custom ops to their PyTorch-native forms (inductor fuses
    them in the graph); the saving path runs eagerly, so inside ``DirectKernels.active()`` each op calls
    its platform kernel (here the CPU build's: in-place rotary, C++ RMSNorm where registered) with the
    same results, and the compiled path's choice comes back on exit, even after an error."""
    from vllm.config import CompilationConfig, VllmConfig, set_current_vllm_config
    from vllm.config.compilation import CompilationMode

    from arctic_runtime.swiftkv.model import DirectKernels

    compiled = VllmConfig(
        compilation_config=CompilationConfig(mode=CompilationMode.VLLM_COMPILE, backend="inductor")
    )
    with set_current_vllm_config(compiled):
        from vllm.model_executor.layers.activation import SiluAndMul
        from vllm.model_executor.layers.layernorm import RMSNorm
        from vllm.model_executor.layers.rotary_embedding import get_rope

        ops = torch.nn.ModuleDict(
            {
                "norm": RMSNorm(64),
                "act": SiluAndMul(),
                "rope": get_rope(16, 128, is_neox_style=True, dtype=torch.float32),
            }
        )
        chosen = {name: op._forward_method for name, op in ops.items()}
        assert (
            "native" in chosen["act"].__name__
        )  # the premise: compiled engines dispatch to PyTorch-native forms
        direct = DirectKernels(ops)
        gen = torch.Generator().manual_seed(0)
        x, res, gate = (torch.randn(7, 64, generator=gen) for _ in range(3))
        pos = torch.arange(7)
        q, k = torch.randn(7, 64, generator=gen), torch.randn(7, 32, generator=gen)

        def run() -> list[torch.Tensor]:
            normed, added = ops["norm"](x.clone(), res.clone())
            rq, rk = ops["rope"](pos, q.clone(), k.clone())
            return [normed, added, ops["act"](torch.cat([x, gate], -1)), rq, rk]

        expected = run()
        with direct.active():
            assert ops["rope"]._forward_method.__name__ == "forward_cpu"
            assert ops["act"]._forward_method.__name__ == "forward_cpu"
            got = run()
        for e, g in zip(expected, got, strict=True):
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)
        assert {name: op._forward_method for name, op in ops.items()} == chosen

        with pytest.raises(RuntimeError, match="step failed"), direct.active():
            raise RuntimeError("step failed")
        assert {name: op._forward_method for name, op in ops.items()} == chosen


def test_logits_match_the_pytorch_reference(swiftkv_dir: Path, served: dict[str, Any]) -> None:
    config, state = load_folder(swiftkv_dir)
    ref = SwiftKVLlama(config, {k: v.float() for k, v in state.items()}, LKV).to_device("cpu", torch.float32)
    worst, mismatched = 0.0, []
    for i, (prompt, answer, logprobs) in enumerate(
        zip(served["prompt_token_ids"], served["token_ids"], served["logprobs"], strict=True)
    ):
        assert answer, f"prompt {i}: no tokens"
        with torch.no_grad():
            logp = torch.log_softmax(ref(torch.tensor([prompt + answer])).float(), -1)[0]
        rows = logp[len(prompt) - 1 : len(prompt) - 1 + len(answer)]
        expected = rows[torch.arange(len(answer)), torch.tensor(answer)]
        worst = max(worst, float((expected - torch.tensor(logprobs)).abs().max()))
        if rows.argmax(-1).tolist() != answer:
            mismatched.append(i)
    assert worst < LOGPROB_ATOL, f"largest log-probability difference {worst:.2e} nats"
    assert not mismatched, f"greedy tokens differ from the reference's argmax for prompts {mismatched}"


def test_suffix_decoding_keeps_greedy_tokens(swiftkv_dir: Path, served: dict[str, Any]) -> None:
    # eager mode, the saving path in every step that skips rows: each request keeps 1 + 8 rows (its
    # draft positions), so steps of 128 tokens (prompt chunks beside drafting requests) leave rows
    # to skip in a few steps (4 on the CPU build)
    spec = generate(
        swiftkv_dir,
        speculative_config=SUFFIX,
        engine_args={"max_num_batched_tokens": 128},
        additional_config={"arctic": {"swiftkv": {"enabled": True, "min_saving_tokens": 1}}},
    )
    assert spec["token_ids"] == served["token_ids"]
    (worker,) = spec["engine"]["workers"]
    assert worker["swiftkv"]["saving_steps"] >= 2
    assert worker["swiftkv"]["saving_paths"] == {"per-layer": worker["swiftkv"]["saving_steps"]}


def test_lkv_equal_to_layers_is_the_base_model(
    smollm2_dir: Path, smollm2_parallel: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> None:
    # the base model's answers come from the session's one-rank run (the same runner and settings)
    layers = int(json.loads((smollm2_dir / "config.json").read_text())["num_hidden_layers"])
    full = swiftkv_folder(smollm2_dir, tmp_path_factory.mktemp("swiftkv") / f"lkv{layers}", layers)
    base, swift = smollm2_parallel, run_parallel(full)
    assert swift["token_ids"] == base["token_ids"]
    diffs = [
        abs(a - b)
        for x, y in zip(base["logprobs"], swift["logprobs"], strict=True)
        for a, b in zip(x, y, strict=True)
    ]
    assert max(diffs) < 1e-4


def start_error(model: Path, additional: dict[str, Any]) -> str:
    code = (
        "import sys; from vllm import LLM; "
        f"LLM({str(model)!r}, dtype='float32', enforce_eager=True, max_model_len=256, "
        f"additional_config={additional!r})"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=engine_env(True),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode != 0
    return proc.stderr.strip().splitlines()[-1]


def test_startup_errors_name_the_setting(
    smollm2_dir: Path, swiftkv_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    line = start_error(smollm2_dir, {"arctic": {"swiftkv": {"enabled": True}}})
    assert line.startswith(
        "arctic-serve: additional_config.arctic.swiftkv.enabled: the model is not a SwiftKV"
    )
    bad = tmp_path_factory.mktemp("swiftkv") / "bad-lkv"
    bad.mkdir(exist_ok=True)
    for item in swiftkv_dir.iterdir():
        (bad / item.name).symlink_to(item)
    (bad / "config.json").unlink()
    config = json.loads((swiftkv_dir / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "num_key_value_layers": 31}))
    line = start_error(bad, {})
    assert (
        line == "arctic-serve: num_key_value_layers: must be an integer in 1..30 (num_hidden_layers), got 31"
    )
