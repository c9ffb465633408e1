"""Draft heads without an engine: the published config layouts, the weights round trip, the hybrid
rule, the front end's translation of ``speculative_config``, the training replay, and the Triton
kernels against their references (CUDA only: skipped, never passed, on CPU)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from arctic_kernels import speculator as kernels
from arctic_runtime.contract import InvalidSetting, parse_engine_settings
from arctic_runtime.heads.config import HeadConfig, check_against_base, parse_head_config
from arctic_runtime.heads.engine import (
    DEFAULT_HYBRID_THRESHOLD,
    forced_prefix,
    hybrid_pick,
    hybrid_source,
    split_head_spec,
)
from arctic_runtime.heads.model import (
    DraftHead,
    GraphedDrafter,
    arctic_layout,
    load_head,
    save_arctic_layout,
    save_head,
)
from arctic_runtime.train.speculator import head_loss, replay

# IBM's published MLP speculator config (ibm-fms/llama-13b-accelerator's fields) and the config
# ArcticTraining writes for an LSTM speculator (dimensions as dotted strings, architectures a string).
IBM_MLP = {
    "architectures": ["MLPSpeculatorPreTrainedModel"],
    "emb_dim": 32,
    "inner_dim": 0,
    "model_type": "mlp_speculator",
    "n_candidates": 5,
    "n_predict": 3,
    "top_k_tokens_per_head": [5, 3, 2],
    "vocab_size": 50,
}
ARCTIC_LSTM = {
    "architectures": "ArcticLSTMSpeculatorPreTrainedModel",
    "base_model_archs": ["LlamaForCausalLM"],
    "input_hidden_dim": 32,
    "inner_dim": "16",
    "emb_dim": "16",
    "proj_dim": "16",
    "method": "sum_lstm",
    "model_type": "mlp_speculator",
    "n_predict": 3,
    "num_lookahead_tokens": 3,
    "scale_input": True,
    "tie_weights": True,
    "tie_lstm_embs": True,
    "vocab_size": 50,
}


def test_published_layouts_parse() -> None:
    mlp = parse_head_config(IBM_MLP)
    assert (mlp.kind, mlp.input_hidden_dim, mlp.inner_dim, mlp.tie_weights) == ("mlp", 32, 32, False)
    lstm = parse_head_config(ARCTIC_LSTM)
    assert (lstm.kind, lstm.input_hidden_dim, lstm.inner_dim, lstm.proj_dim) == ("lstm", 32, 16, 16)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"method": "sum_rnn"}, "config.json.method"),
        ({"inner_dim": "16.16"}, "config.json.inner_dim"),
        ({"n_predict": 0}, "config.json.n_predict"),
        ({"tie_lstm_embs": False}, "config.json.tie_lstm_embs"),
        ({"proj_dim": "8"}, "config.json.proj_dim"),
    ],
)
def test_bad_lstm_configs_name_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidSetting) as info:
        parse_head_config({**ARCTIC_LSTM, **change})
    assert info.value.errors[0].field == field


def test_base_checks_name_the_key() -> None:
    config = parse_head_config(ARCTIC_LSTM)
    with pytest.raises(InvalidSetting, match=r"speculative_config.model: .*hidden size is 64"):
        check_against_base(config, base_hidden=64, base_vocab=50, num_speculative_tokens=None)
    with pytest.raises(
        InvalidSetting, match=r"speculative_config.num_speculative_tokens: .*1..n_predict \(= 3\)"
    ):
        check_against_base(config, base_hidden=32, base_vocab=50, num_speculative_tokens=4)
    assert check_against_base(config, base_hidden=32, base_vocab=50, num_speculative_tokens=None) == 3


def small(kind: str, tie_base: bool = False, tie: bool = True) -> HeadConfig:
    return HeadConfig(
        kind="lstm" if kind == "lstm" else "mlp",
        n_predict=3,
        input_hidden_dim=16,
        inner_dim=16,
        emb_dim=16,
        proj_dim=16,
        vocab_size=50,
        tie_weights=tie,
        scale_input=True,
        tie_base_embeddings=tie_base,
    )


@pytest.mark.parametrize(("kind", "tie"), [("mlp", True), ("mlp", False), ("lstm", True)])
def test_weights_round_trip_in_the_published_keys(tmp_path: Path, kind: str, tie: bool) -> None:
    head = DraftHead(small(kind, tie=tie))
    head.init_weights(torch.Generator().manual_seed(1))
    save_head(head, tmp_path)
    keys = set(head.checkpoint_state())
    if kind == "lstm":
        assert {
            "forget_emb.0.weight",
            "projs.0.weight",
            "projs.1.weight",
            "cell_ln.0.bias",
            "head.2.weight",
        } <= keys
    else:
        assert {f"{m}.{i}.weight" for m in ("emb", "proj", "head", "ln") for i in range(3)} <= keys
    again = load_head(tmp_path)
    x, tok = torch.randn(4, 16), torch.randint(0, 50, (4,))
    assert torch.equal(head.draft(x, tok, 3), again.draft(x, tok, 3))


def test_tied_to_base_leaves_the_embedding_out(tmp_path: Path) -> None:
    emb = torch.randn(50, 16)
    head = DraftHead(small("lstm", tie_base=True))
    head.init_weights()
    head.tie_to_base(emb)
    save_head(head, tmp_path)
    assert not any(k.startswith(("forget_emb", "head")) for k in head.checkpoint_state())
    with pytest.raises(InvalidSetting, match="needs the base model's embedding"):
        load_head(tmp_path)
    x, tok = torch.randn(4, 16), torch.randint(0, 50, (4,))
    assert torch.equal(head.draft(x, tok, 3), load_head(tmp_path, emb).draft(x, tok, 3))


@pytest.mark.parametrize(("kind", "tie_base"), [("lstm", False), ("lstm", True), ("mlp", True)])
def test_arctic_layout_reads_back_and_has_the_keys_arctic_inference_requires(
    tmp_path: Path, kind: str, tie_base: bool
) -> None:
    emb = torch.randn(50, 16)
    head = DraftHead(small(kind, tie_base=tie_base))
    head.init_weights(torch.Generator().manual_seed(2))
    if tie_base:
        head.tie_to_base(emb)
    config, tensors = arctic_layout(head)
    assert "tie_base_embeddings" not in config
    if kind == "lstm":
        # Arctic Inference 0.3.0's ArcticLSTMSpeculator.load_weights pops exactly these per-gate keys
        gates = {f"{g}_proj.{i}.weight" for g in ("forget", "input", "output", "cell") for i in (0, 1)}
        assert set(tensors) == gates | {
            "forget_emb.0.weight",
            "cell_ln.0.weight",
            "cell_ln.0.bias",
            "state_ln.0.weight",
            "state_ln.0.bias",
            "head.0.weight",
        }
        assert tensors["forget_proj.0.weight"].shape == (16, 16)
        assert torch.equal(tensors["cell_proj.1.weight"], head.projs[1].weight[48:])
    else:
        assert set(tensors) == {
            "emb.0.weight",
            "proj.0.weight",
            "proj.1.weight",
            "ln.0.weight",
            "ln.0.bias",
            "head.0.weight",
        }
    if tie_base:  # the base model's embedding travels in the file: no base model needed to read it
        assert torch.equal(tensors["head.0.weight"], emb)
    save_arctic_layout(head, tmp_path)
    again = load_head(tmp_path)
    x, tok = torch.randn(4, 16), torch.randint(0, 50, (4,))
    assert torch.equal(head.draft(x, tok, 3), again.draft(x, tok, 3))


def test_published_mlp_math() -> None:
    """One MLP step by hand: proj(h') + emb(tok) * w_e / w_s, RMS-norm with scale and shift, GELU;
    h' = rmsnorm(h) / sqrt(2) with scale_input; argmax of the head."""
    head = DraftHead(small("mlp"))
    head.init_weights(torch.Generator().manual_seed(2))
    h, tok = torch.randn(2, 16), torch.tensor([3, 7])
    ws = 0.5 ** (0.5 / 3)
    we = math.sqrt((1 - ws**2) * 16 / 2)
    hp = h / h.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt() / math.sqrt(2)
    s = hp @ head.proj[0].weight.T + head.emb[0].weight[tok] * (we / ws)
    s = s / s.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt() * head.ln[0].weight + head.ln[0].bias
    s = torch.nn.functional.gelu(s)
    assert torch.equal(head.draft(h, tok, 1)[:, 0], (s @ head.head[0].weight.T).argmax(-1))


def test_lstm_cell_reference_matches_the_definition() -> None:
    g = torch.Generator().manual_seed(3)
    p = 8
    gates, emb, c = (
        torch.randn(3, 4 * p, generator=g),
        torch.randn(3, p, generator=g),
        torch.randn(3, p, generator=g),
    )
    w = [torch.randn(p, generator=g) for _ in range(4)]
    h, c2 = kernels.lstm_cell_reference(gates, emb, 0.5, c, *w)
    z = gates + 0.5 * emb.repeat(1, 4)
    f, i, o, cand = z.split(p, dim=-1)

    def ln(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.gelu(x / x.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt() * a + b)

    want_c = c * torch.sigmoid(f) + ln(cand, w[0], w[1]) * torch.sigmoid(i)
    torch.testing.assert_close(c2, want_c)
    torch.testing.assert_close(h, ln(want_c, w[2], w[3]) * torch.sigmoid(o))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="Triton kernels run on CUDA only")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_kernels_match_the_references(dtype: torch.dtype) -> None:
    g = torch.Generator(device="cuda").manual_seed(0)
    tol = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 3e-2, "rtol": 3e-2}
    for rows, p in ((1, 576), (37, 4096)):
        x = torch.randn(rows, p, device="cuda", generator=g).to(dtype)
        w, b = (
            torch.randn(p, device="cuda", generator=g).to(dtype),
            torch.randn(p, device="cuda", generator=g).to(dtype),
        )
        torch.testing.assert_close(
            kernels.speculator_ln_triton(x, w, b, gelu=True),
            kernels.speculator_ln_reference(x, w, b, gelu=True),
            **tol,
        )
        gates = torch.randn(rows, 4 * p, device="cuda", generator=g).to(dtype)
        emb, c = (
            torch.randn(rows, p, device="cuda", generator=g).to(dtype),
            torch.randn(rows, p, device="cuda", generator=g).to(dtype),
        )
        ws = [torch.randn(p, device="cuda", generator=g).to(dtype) for _ in range(4)]
        for got, want in zip(
            kernels.lstm_cell_triton(gates, emb, 0.3, c, *ws),
            kernels.lstm_cell_reference(gates, emb, 0.3, c, *ws),
            strict=True,
        ):
            torch.testing.assert_close(got, want, **tol)


def test_hybrid_rule() -> None:
    # a suffix draft scoring at least the threshold wins; one shorter than k is continued by the head
    assert hybrid_source(4, 3.0, 3, 3.0) == "suffix"
    assert hybrid_source(4, 2.9, 3, 3.0) == "head"
    assert hybrid_source(2, 1.0, 3, 1.0) == "suffix+head"
    assert hybrid_source(3, 1.0, 3, 1.0) == "suffix"
    assert hybrid_source(2, 0.99, 3, 1.0) == "head"
    assert hybrid_source(0, 0.0, 3, 0.0) == "head"  # no suffix draft: the head, whatever the threshold
    assert DEFAULT_HYBRID_THRESHOLD == 1.0
    # Arctic's rule (threshold = k) never extends: a score of k needs k tokens (path probs <= 1)
    assert hybrid_source(2, 2.0, 3, 3.0) == "head"
    assert hybrid_pick("suffix", [1, 2, 3, 4], [9, 9, 9], 3) == [1, 2, 3, 4]
    assert hybrid_pick("head", [1, 2, 3, 4], [9, 8, 7], 3) == [9, 8, 7]
    assert hybrid_pick("head", [], [9, 8, 7], 2) == [9, 8]  # cut to the room left
    assert hybrid_pick("suffix+head", [1], [1, 8, 7], 3) == [1, 8, 7]
    with pytest.raises(ValueError, match="must start with the suffix draft"):
        hybrid_pick("suffix+head", [1, 2], [1, 8, 7], 3)
    # the head's forced tokens: the suffix draft of an extended row, -1 (the head's own) elsewhere
    assert forced_prefix("suffix+head", [5, 6], 3) == [5, 6, -1]
    assert forced_prefix("head", [5, 6], 3) == [-1, -1, -1]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs run on CUDA only")
@pytest.mark.parametrize("kind", ["mlp", "lstm"])
def test_graphed_drafter_replays_exactly_the_heads_drafts(kind: str) -> None:
    """One CUDA graph per padded batch size gives the eager head's drafts, with and without a
    forced prefix, for batches that pad (3 -> 4, 5 -> 8) and that fit exactly, and a graph
    captured once serves later calls with other inputs and other prefixes."""
    head = DraftHead(small(kind))
    head.init_weights(torch.Generator().manual_seed(5))
    head = head.to("cuda")
    graphed = GraphedDrafter(head, max_batch=8)
    g = torch.Generator().manual_seed(6)
    for rows in (3, 4, 5, 3):
        x = torch.randn(rows, 16, generator=g).cuda()
        tok = torch.randint(0, 50, (rows,), generator=g).cuda()
        assert torch.equal(graphed.draft(x, tok, 3), head.draft(x, tok, 3))
        prefix = torch.full((rows, 3), -1, device="cuda")
        prefix[0, 0], prefix[rows - 1, :2] = 7, torch.tensor([9, 4], device="cuda")
        assert torch.equal(graphed.draft(x, tok, 3, prefix), head.draft(x, tok, 3, prefix))
        # a prefix given once does not leak into the next call without one
        assert torch.equal(graphed.draft(x, tok, 3), head.draft(x, tok, 3))
    assert sorted(graphed.graphs) == [(4, 3), (8, 3)]
    # beyond max_batch: the eager head, no graph
    x, tok = torch.randn(9, 16, generator=g).cuda(), torch.randint(0, 50, (9,), generator=g).cuda()
    assert torch.equal(graphed.draft(x, tok, 3), head.draft(x, tok, 3))
    assert sorted(graphed.graphs) == [(4, 3), (8, 3)]


@pytest.mark.parametrize("kind", ["mlp", "lstm"])
def test_a_forced_prefix_is_kept_and_fed_to_the_later_steps(kind: str) -> None:
    head = DraftHead(small(kind))
    head.init_weights(torch.Generator().manual_seed(4))
    x, tok = torch.randn(3, 16), torch.tensor([3, 7, 11])
    free = head.draft(x, tok, 3)
    # no prefix (all -1) is the head's own draft
    assert torch.equal(head.draft(x, tok, 3, torch.full((3, 3), -1)), free)
    forced_tok = (free[:, 0] + 1) % 50  # a first token the head did not pick
    prefix = torch.full((3, 3), -1)
    prefix[:, 0] = forced_tok
    prefix[2, 0] = -1  # row 2: free
    out = head.draft(x, tok, 3, prefix)
    assert torch.equal(out[:2, 0], forced_tok[:2]) and torch.equal(out[2], free[2])
    # the later steps read the forced token: as drafting two steps with it fed at step 1
    states = head.step_states(x[:2], [tok[:2], forced_tok[:2]])
    assert torch.equal(out[:2, 1], head.head[1](states[1]).argmax(-1))


def test_front_end_translation(tmp_path: Path) -> None:
    head = DraftHead(small("mlp"))
    head.init_weights()
    save_head(head, tmp_path)
    assert split_head_spec({"method": "ngram", "num_speculative_tokens": 3})[1] is None
    spec, section, config = split_head_spec({"method": "arctic", "model": str(tmp_path)})
    assert spec == {"method": "suffix", "num_speculative_tokens": 3, "suffix_decoding_max_tree_depth": 24}
    assert section is not None and config is not None and section["num_speculative_tokens"] == 3
    heads = parse_engine_settings({"arctic": {"heads": section}}).heads
    assert heads is not None and not heads.hybrid
    spec, section, _ = split_head_spec(
        {
            "method": "mlp_speculator",
            "model": str(tmp_path),
            "enable_suffix_decoding": True,
            "suffix_cache_max_depth": 40,
        }
    )
    assert spec == {"method": "suffix", "num_speculative_tokens": 16, "suffix_decoding_max_tree_depth": 40}
    assert section is not None and section["hybrid"]
    with pytest.raises(InvalidSetting, match=r"speculative_config\.num_speculative_tokens"):
        split_head_spec({"method": "arctic", "model": str(tmp_path), "num_speculative_tokens": 5})
    with pytest.raises(
        InvalidSetting, match=r"speculative_config\.suffix_cache_max_depth: needs enable_suffix"
    ):
        split_head_spec({"method": "arctic", "model": str(tmp_path), "suffix_cache_max_depth": 40})
    with pytest.raises(InvalidSetting, match=r"speculative_config\.model: .*config\.json is missing"):
        (tmp_path / "config.json").unlink()
        split_head_spec({"method": "arctic", "model": str(tmp_path)})


def test_replay_counts_steps_like_the_engine() -> None:
    answer = [5, 6, 7, 8, 9, 10]
    # perfect drafts of 3: token 0 from prefill, then steps emit 4, then 1 (the last token)
    assert replay(answer, lambda j: answer[j + 1 : j + 4]) == (2, 4, 4)
    # useless drafts: one token per step
    assert replay(answer, lambda j: [0, 0]) == (5, 9, 0)


def test_loss_targets_are_the_next_tokens() -> None:
    """Training step 0 at answer position t is fed the token sampled there (answer[t]) with the
    hidden state that produced it, and learns answer[t + 1]: the engine's use of the head."""
    head = DraftHead(small("mlp"))
    head.init_weights(torch.Generator().manual_seed(0))
    tokens = torch.tensor([[1, 2, 3, 4, 5, 6, -1, -1, -1, -1]])
    hidden = torch.randn(1, 6, 16)
    _, per_step = head_loss(head, hidden, tokens)
    manual = []
    for t in range(5):  # answer[6] does not exist: positions 0..4 have a step-0 target
        state = head.step_states(hidden[:, t], [tokens[:, t]])[0]
        manual.append(torch.nn.functional.cross_entropy(head.head[0](state), tokens[:, t + 1]))
    assert per_step[0] == pytest.approx(float(torch.stack(manual).mean()), rel=1e-5)


class _Recording:
    """Stands in for the head (``DraftHead.draft``'s signature) and keeps what it was handed."""

    def __init__(self, head: DraftHead) -> None:
        self.head, self.calls = head, []  # type: ignore[var-annotated]

    def draft(self, hidden: torch.Tensor, last: torch.Tensor, k: int, prefix: Any = None) -> torch.Tensor:
        self.calls.append((hidden, last, k))
        out: torch.Tensor = self.head.draft(hidden, last, k, prefix)
        return out


def _drafter(kind: str, max_model_len: int = 100) -> tuple[Any, _Recording]:
    from arctic_runtime.contract import HeadSettings
    from arctic_runtime.heads.engine import HeadDrafter

    head = DraftHead(small(kind))
    head.init_weights(torch.Generator().manual_seed(8))
    drafter = HeadDrafter(HeadSettings(model="unused", num_speculative_tokens=3), max_model_len)
    drafter.head = head
    drafter.graphed = _Recording(head)
    return drafter, drafter.graphed


@pytest.mark.parametrize("kind", ["mlp", "lstm"])
def test_head_drafts_every_row_from_the_hidden_states_as_given(kind: str) -> None:
    """The common step (every request sampled a token and has room): each row's draft is the head's
    on its own hidden state and last sampled token, and the head reads the runner's hidden states
    as they are (no gathered copy: host and device work per step stay flat in the batch size)."""
    import numpy as np

    drafter, recording = _drafter(kind)
    hidden = torch.randn(4, 16, generator=torch.Generator().manual_seed(9))
    sampled = [[3], [4, 5], [6], [7, 8, 9]]
    counts = np.array([10, 20, 30, 40, 0, 0, 0, 0], dtype=np.int32)  # vLLM's array: max_num_reqs long
    drafts = drafter.propose(["a", "b", "c", "d"], None, counts, counts, sampled, 3, True, hidden)
    assert drafts == drafter.head.draft(hidden, torch.tensor([3, 5, 6, 9]), 3).tolist()
    ((given, last, k),) = recording.calls
    assert given.data_ptr() == hidden.data_ptr() and last.tolist() == [3, 5, 6, 9] and k == 3
    counters = drafter.counters.as_dict()
    assert (counters["head_drafts"], counters["drafted_tokens"], counters["rows"]) == (4, 12, 4)


@pytest.mark.parametrize("kind", ["mlp", "lstm"])
def test_rows_without_a_token_or_room_are_left_out_and_near_the_end_drafts_are_cut(kind: str) -> None:
    """A row that sampled nothing (a prefill chunk) gets no draft; a row near max_model_len gets
    only the room left (max_model_len - 1 - tokens), one with no room none; the others draft k."""
    drafter, recording = _drafter(kind, max_model_len=100)
    hidden = torch.randn(5, 16, generator=torch.Generator().manual_seed(10))
    sampled = [[3], [], [6], [7], [11]]
    counts = [10, 20, 97, 99, 30]  # rooms: 3, -, 2, 0, 3
    drafts = drafter.propose(list("abcde"), None, counts, counts, sampled, 3, True, hidden)
    full = drafter.head.draft(hidden[[0, 2, 4]], torch.tensor([3, 6, 11]), 3).tolist()
    assert drafts == [full[0], [], full[1][:2], [], full[2]]
    ((given, last, _),) = recording.calls
    assert torch.equal(given, hidden[[0, 2, 4]]) and last.tolist() == [3, 6, 11]
    assert drafter.counters.head_drafts == 3 and drafter.counters.drafted_tokens == 8
    # the live cap (k = 1 this step) and a step that does not draft
    drafts = drafter.propose(list("abcde"), None, counts, counts, sampled, 1, True, hidden)
    assert drafts == [full[0][:1], [], full[1][:1], [], full[2][:1]]
    assert drafter.propose(list("abcde"), None, counts, counts, sampled, 3, False, hidden) == [[]] * 5
    assert drafter.counters.steps == 3 and len(recording.calls) == 2


def test_device_drafts_leave_the_common_steps_drafts_on_the_device() -> None:
    """On CUDA (``device_drafts``) the common step's drafts are the head's (rows, k) tensor, which
    vLLM's runner copies to the host itself and reads after the engine core has processed the
    step's output; any other step still gets lists cut to each row's room."""
    import numpy as np

    drafter, _ = _drafter("lstm", max_model_len=100)
    drafter.device_drafts = True
    hidden = torch.randn(3, 16, generator=torch.Generator().manual_seed(11))
    sampled, counts = [[3], [4], [5]], np.array([10, 20, 30], dtype=np.int32)
    out = drafter.propose(list("abc"), None, counts, counts, sampled, 3, True, hidden)
    assert isinstance(out, torch.Tensor) and out.shape == (3, 3)
    assert torch.equal(out, drafter.head.draft(hidden, torch.tensor([3, 4, 5]), 3))
    drafter.device_drafts = False
    assert drafter.propose(list("abc"), None, counts, counts, sampled, 3, True, hidden) == out.tolist()
    drafter.device_drafts = True
    near_end = np.array([10, 98, 30], dtype=np.int32)  # row 1: room for 1 token
    lists = drafter.propose(list("abc"), None, near_end, near_end, sampled, 3, True, hidden)
    assert lists == [out[0].tolist(), out[1, :1].tolist(), out[2].tolist()]
    assert drafter.counters.drafted_tokens == 3 + 3 + 3 + 3 + 3 + 3 + 7


# --- the asynchronous path (head alone under vLLM's asynchronous scheduling) ---


def test_accepted_tokens_count_the_valid_prefix_and_take_its_last_token() -> None:
    """A step's sampled tokens (rows, 1 + drafts; -1 after the first rejection, ids >= vocab are
    padding): each row's count of valid tokens and the last of them; a discarded row (a prefill
    chunk) counts 0 and takes its backup token, whatever it sampled."""
    from arctic_runtime.heads.engine import accepted_tokens

    sampled = torch.tensor(
        [[5, 6, 7, 8], [9, -1, -1, -1], [10, 11, -1, -1], [12, -1, -1, -1], [13, 99, -1, -1]]
    )
    discarded = torch.tensor([False, False, False, True, False])
    backup = torch.tensor([0, 0, 0, 42, 0], dtype=torch.int32)
    next_ids, counts = accepted_tokens(sampled, discarded, backup, vocab_size=50)
    assert counts.tolist() == [4, 1, 2, 0, 1] and counts.dtype == torch.int32
    assert next_ids.tolist() == [8, 9, 11, 42, 13] and next_ids.dtype == torch.int32
    # a step without drafts: one token per row
    next_ids, counts = accepted_tokens(torch.tensor([[3], [4]]), torch.tensor([False, False]), backup[:2], 50)
    assert (next_ids.tolist(), counts.tolist()) == ([3, 4], [1, 1])


def test_last_accepted_rows_index_each_requests_span_of_hidden_states() -> None:
    """vLLM computes logits (and keeps hidden states) at every verified draft position plus one:
    request i's rows start at cu_num_sampled[i - 1]; its last accepted token is count - 1 rows in.
    A request with no valid token points at its first row."""
    from arctic_runtime.heads.engine import last_accepted_rows

    cu_num_sampled = torch.tensor([4, 5, 8, 9], dtype=torch.int32)  # drafts 3, 0, 2, 0
    counts = torch.tensor([2, 1, 3, 0], dtype=torch.int32)
    rows = last_accepted_rows(counts, cu_num_sampled)
    assert rows.tolist() == [1, 4, 7, 8] and rows.dtype == torch.long


def test_drafts_on_the_device_are_the_heads_and_zeros_when_not_drafting() -> None:
    """``propose_on_device``: every row's k drafts from its own hidden state row and last token, as
    one tensor (rows gathered when given); with drafting off the head does not run and the drafts
    are zeros (the scheduler verifies none of them: the cap cleared the requests' placeholders)."""
    drafter, recording = _drafter("lstm")
    hidden = torch.randn(6, 16, generator=torch.Generator().manual_seed(12))
    next_ids = torch.tensor([3, 4, 5], dtype=torch.int32)
    out = drafter.propose_on_device(hidden, None, next_ids, 3, True)
    assert torch.equal(out, drafter.head.draft(hidden[:3], next_ids.long(), 3))
    rows = torch.tensor([1, 3, 5])
    out = drafter.propose_on_device(hidden, rows, next_ids, 3, True)
    assert torch.equal(out, drafter.head.draft(hidden[[1, 3, 5]], next_ids.long(), 3))
    off = drafter.propose_on_device(hidden, rows, next_ids, 3, False)
    assert off.shape == (3, 3) and not off.any() and len(recording.calls) == 2
    counters = drafter.counters.as_dict()
    assert (counters["steps"], counters["rows"], counters["head_drafts"], counters["drafted_tokens"]) == (
        3,
        9,
        6,
        18,
    )


def test_a_head_alone_config_is_built_as_eagle_like_and_nothing_else_is() -> None:
    """The front end's one change to vLLM's scheduling decision: while a head-alone config runs
    VllmConfig.__post_init__, method ``suffix`` is among vLLM's EAGLE-like methods (so vLLM keeps
    asynchronous scheduling, or refuses it, exactly as for EAGLE); for the hybrid, plain suffix
    decoding and other methods the list is vLLM's own, and it is restored afterwards, also when
    __post_init__ raises."""
    import typing
    from types import SimpleNamespace

    import vllm.config.vllm as module

    from arctic_runtime.hooks import wrap_vllm_config_post_init

    seen: list[bool] = []

    def original(self: Any) -> None:
        seen.append("suffix" in typing.get_args(module.EagleModelTypes))
        if self.fail:
            raise ValueError("vLLM refused")

    wrapped = wrap_vllm_config_post_init(original)
    vllm_own = module.EagleModelTypes

    def config(heads: dict[str, Any] | None, method: str = "suffix", fail: bool = False) -> Any:
        extra = {} if heads is None else {"arctic": {"heads": heads}}
        return SimpleNamespace(
            additional_config=extra, speculative_config=SimpleNamespace(method=method), fail=fail
        )

    head = {"model": "m", "method": "arctic", "num_speculative_tokens": 3, "hybrid": False}
    wrapped(config(head))
    wrapped(config({**head, "hybrid": True}))
    wrapped(config(None))
    wrapped(config(None, method="ngram"))
    assert seen == [True, False, False, False]
    with pytest.raises(ValueError, match="vLLM refused"):
        wrapped(config(head, fail=True))
    assert seen[-1] is True and module.EagleModelTypes is vllm_own
