"""Draft heads (Arctic's LSTM/MLP speculators) behind ``method: arctic | mlp_speculator`` in a real
engine with the real SmolLM2: greedy answers identical with and without drafts (head alone,
synchronous and asynchronous, and hybrid with suffix decoding), the live cap, and bad configs
failing at startup naming the key.

Three engine processes (one per module fixture); the heads are small seeded random ones made here
(tied to the base model's embedding, so only their projections and norms are written), or the
trained SmolLM2 heads when ``models/speculators`` has them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.engine.conftest import REPO, run_module
from tests.engine.prompts import MAX_TOKENS, PROMPTS

pytestmark = pytest.mark.engine

TRAINED = REPO / "models" / "speculators"


def make_head(folder: Path, kind: str, *, hidden: int = 576, n_predict: int = 3, **extra: Any) -> Path:
    """A seeded random head for SmolLM2's shape (or a trained one copied from models/speculators)."""
    import torch

    from arctic_runtime.heads.config import HeadConfig
    from arctic_runtime.heads.model import DraftHead, save_head

    config = HeadConfig(
        kind="lstm" if kind == "lstm" else "mlp",
        n_predict=n_predict,
        input_hidden_dim=hidden,
        inner_dim=hidden,
        emb_dim=hidden,
        proj_dim=hidden,
        vocab_size=49152,
        tie_weights=True,
        scale_input=True,
        tie_base_embeddings=True,
    )
    head = DraftHead(config)
    head.init_weights(torch.Generator().manual_seed(0))
    save_head(head, folder)
    if extra:
        path = folder / "config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **extra}))
    return folder


def head_dir(tmp: Path, kind: str) -> Path:
    trained = TRAINED / f"smollm2-135m-{kind}"
    return trained if (trained / "config.json").is_file() else make_head(tmp / kind, kind)


def lstm_head_alone(model: Path, tmp: Path, **extra: Any) -> dict[str, Any]:
    """The heads runner's request for the LSTM head alone (k = 3) on PROMPTS, plus ``extra``."""
    spec = {"method": "arctic", "model": str(head_dir(tmp, "lstm")), "num_speculative_tokens": 3}
    return {
        "model": str(model),
        "speculative_config": spec,
        "prompts": PROMPTS,
        "max_tokens": MAX_TOKENS,
        **extra,
    }


@pytest.fixture(scope="module")
def lstm_run(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    request = lstm_head_alone(smollm2_dir, tmp_path_factory.mktemp("heads"))
    return run_module("tests.engine.heads_runner", request, enabled=True, timeout=900)


@pytest.fixture(scope="module")
def async_lstm_run(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The LSTM head alone with vLLM's own scheduling decision kept on this CPU (the runner path a
    GPU takes: asynchronous scheduling, drafts on the device), and the live cap."""
    request = lstm_head_alone(
        smollm2_dir, tmp_path_factory.mktemp("heads-async"), cap=True, keep_async_decision=True
    )
    return run_module(
        "tests.engine.heads_runner", request, enabled=True, timeout=900, VLLM_ENABLE_V1_MULTIPROCESSING="0"
    )


@pytest.fixture(scope="module")
def hybrid_run(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("hybrid")
    mlp = head_dir(tmp, "mlp")
    spec = {
        "method": "mlp_speculator",
        "model": str(mlp),
        "num_speculative_tokens": 3,
        "enable_suffix_decoding": True,
        "suffix_decoding_max_tree_depth": 32,
    }
    bad = [
        {"method": "arctic", "model": str(tmp / "missing")},
        {"method": "arctic", "model": str(make_head(tmp / "wide", "mlp", hidden=512))},
        {"method": "arctic", "model": str(mlp), "num_speculative_tokens": 4},
        {"method": "arctic", "model": str(make_head(tmp / "rnn", "lstm", method="sum_rnn"))},
    ]
    request = {
        "model": str(smollm2_dir),
        "speculative_config": spec,
        "prompts": PROMPTS,
        "max_tokens": MAX_TOKENS,
        "bad": bad,
        "cap": True,
        "keep_async_decision": True,
    }
    return run_module("tests.engine.heads_runner", request, enabled=True, timeout=900)


def test_lstm_head_drafts_and_greedy_answers_are_unchanged(
    lstm_run: dict[str, Any], vanilla: dict[str, Any]
) -> None:
    assert lstm_run["token_ids"] == vanilla["token_ids"]
    heads = lstm_run["heads"]
    assert heads["loaded"] and heads["head"] == {"kind": "lstm", "n_predict": 3}
    assert heads["counters"]["head_drafts"] > 0 and heads["counters"]["suffix_drafts"] == 0
    spec = lstm_run["spec"]
    assert spec["spec_decode_num_draft_tokens"] >= 3 * 20, spec  # every decoding step drafted 3


def test_a_head_alone_schedules_asynchronously_with_the_same_drafts_and_answers(
    async_lstm_run: dict[str, Any], lstm_run: dict[str, Any], vanilla: dict[str, Any]
) -> None:
    """Head alone keeps vLLM's asynchronous scheduling and drafts on the device: greedy answers
    unchanged, and the same drafts accepted as on the synchronous path (the same head on the
    same hidden states and tokens); the live cap still stops every draft."""
    assert async_lstm_run["async_scheduling"] is True and lstm_run["async_scheduling"] is False
    assert async_lstm_run["token_ids"] == vanilla["token_ids"]
    assert async_lstm_run["spec"] == lstm_run["spec"], (async_lstm_run["spec"], lstm_run["spec"])
    assert async_lstm_run["spec"]["spec_decode_num_accepted_tokens"] > 0
    assert async_lstm_run["heads"]["counters"]["head_drafts"] > 0
    assert async_lstm_run["capped_token_ids"] == vanilla["token_ids"]
    assert async_lstm_run["capped_spec"]["spec_decode_num_draft_tokens"] == 0, async_lstm_run["capped_spec"]


def test_hybrid_uses_both_sources_and_greedy_answers_are_unchanged(
    hybrid_run: dict[str, Any], vanilla: dict[str, Any]
) -> None:
    assert hybrid_run["token_ids"] == vanilla["token_ids"]
    counters = hybrid_run["heads"]["counters"]
    # the repetitive prompts copy from themselves (suffix wins), the open ones do not (head)
    assert counters["suffix_drafts"] > 0 and counters["head_drafts"] > 0, counters
    assert hybrid_run["heads"]["threshold"] == 1.0  # the measured default (Arctic's rule: n_predict)
    assert hybrid_run["method"] == "mlp_speculator+suffix"  # what the admin API reports
    # the suffix cache reads every sampled token on the host: vLLM's decision stays synchronous
    assert hybrid_run["async_scheduling"] is False
    assert hybrid_run["spec"]["spec_decode_num_accepted_tokens"] > 0


def test_the_live_cap_stops_head_and_hybrid_drafts(
    hybrid_run: dict[str, Any], vanilla: dict[str, Any]
) -> None:
    assert hybrid_run["capped_token_ids"] == vanilla["token_ids"]
    assert hybrid_run["capped_spec"]["spec_decode_num_draft_tokens"] == 0, hybrid_run["capped_spec"]


def test_bad_configs_fail_at_startup_naming_the_key(hybrid_run: dict[str, Any]) -> None:
    missing, wide, too_many, method = hybrid_run["bad"]
    assert "speculative_config.model" in missing and "does not exist" in missing, missing
    assert "speculative_config.model" in wide and "hidden size is 576" in wide, wide
    assert "speculative_config.num_speculative_tokens" in too_many and "n_predict (= 3)" in too_many, too_many
    assert ".method" in method and "sum_lstm" in method, method
