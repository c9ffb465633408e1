"""The engine-side suffix drafter (``arctic_runtime.suffix.engine``): vLLM keys, batch bookkeeping."""

from __future__ import annotations

import pytest

from arctic_runtime.contract import InvalidSetting
from arctic_runtime.suffix.engine import BatchRow, SuffixDrafter, suffix_config
from arctic_runtime.suffix.tree import SuffixConfig
from tests.unit.suffix_backends import BACKENDS, trie_tokens

LINE = [5, 6, 7, 8, 9, 10, 11, 12]


def row(req_id: str, tokens: list[int], num_prompt: int, sampled: bool = True) -> BatchRow:
    return BatchRow(req_id=req_id, token_ids=tokens, num_prompt_tokens=num_prompt, sampled=sampled)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def drafter(backend: str, max_model_len: int = 1000, **overrides: object) -> SuffixDrafter:
    values = {"suffix_decoding_max_tree_depth": 24, "num_speculative_tokens": 8, **overrides}
    return SuffixDrafter(suffix_config(values), max_model_len, backend=backend)  # type: ignore[arg-type]


def test_vllm_keys_map_onto_our_settings() -> None:
    config = suffix_config(
        {
            "suffix_decoding_max_tree_depth": 40,
            "num_speculative_tokens": 10,
            "suffix_decoding_max_spec_factor": 2.0,
            "suffix_decoding_min_token_prob": 0.3,
            "suffix_decoding_max_cached_requests": 7,
        }
    )
    assert config == SuffixConfig(
        max_depth=40, max_spec_tokens=10, max_spec_factor=2.0, min_token_prob=0.3, max_cached_requests=7
    )


def test_defaults_leave_room_for_the_match() -> None:
    assert suffix_config({}).max_depth == 24 and suffix_config({}).max_spec_tokens == 12
    assert suffix_config({"suffix_decoding_max_tree_depth": 64}).max_spec_tokens == 16
    assert suffix_config({"suffix_decoding_max_tree_depth": 2}).max_spec_tokens == 1


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"suffix_decoding_max_tree_depth": 24, "num_speculative_tokens": 24}, "num_speculative_tokens"),
        ({"suffix_decoding_max_tree_depth": 1}, "suffix_decoding_max_tree_depth"),
        ({"suffix_decoding_min_token_prob": 1.5}, "suffix_decoding_min_token_prob"),
        ({"suffix_decoding_max_spec_factor": -1.0}, "suffix_decoding_max_spec_factor"),
        ({"suffix_decoding_max_cached_requests": -1}, "suffix_decoding_max_cached_requests"),
    ],
)
def test_bad_values_name_the_vllm_field(values: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidSetting, match=rf"speculative_config\.{field}: must be"):
        suffix_config(values)


def test_trie_follows_prompt_plus_output_and_drafts_repeats(backend: str) -> None:
    d = drafter(backend)
    prompt = LINE * 3
    tokens = [*prompt, 5]
    (draft,) = d.step([row("a", tokens, len(prompt))], 8, drafting=True)
    assert draft == [6, 7, 8, 9, 10, 11, 12, 5]
    tokens += [6, 7, 8]  # two accepted drafts plus the bonus token
    (draft,) = d.step([row("a", tokens, len(prompt))], 8, drafting=True)
    assert draft[:4] == [9, 10, 11, 12]
    assert d.cache.memory_estimate()["local_trees"] == 1 and d.active_requests == {"a"}


def test_prefilling_rows_draft_nothing_and_are_not_started(backend: str) -> None:
    d = drafter(backend)
    assert d.step([row("a", [], 16, sampled=False)], 8, drafting=True) == [[]]
    assert d.active_requests == frozenset()


def test_no_drafts_when_the_cap_holds_but_tries_keep_up(backend: str) -> None:
    d = drafter(backend)
    prompt = LINE * 3
    assert d.step([row("a", [*prompt, 5], len(prompt))], 8, drafting=False) == [[]]
    (draft,) = d.step([row("a", [*prompt, 5, 6], len(prompt))], 8, drafting=True)
    assert draft[:3] == [7, 8, 9]  # the token added in the capped step is in the trie


def test_drafts_stop_at_max_model_len(backend: str) -> None:
    prompt = LINE * 3
    d = drafter(backend, max_model_len=len(prompt) + 4)
    (draft,) = d.step([row("a", [*prompt, 5], len(prompt))], 8, drafting=True)
    assert draft == [6, 7]  # positions len+1 .. max_model_len-1: room for 2, the 3rd is the bonus
    (draft,) = d.step([row("a", [*prompt, 5, 6, 7, 8], len(prompt))], 8, drafting=True)
    assert draft == []


def test_finished_requests_are_stopped_and_their_response_is_cached(backend: str) -> None:
    d = drafter(backend)
    prompt = [1, 2, 3, 4]
    d.step([row("a", [*prompt, *LINE], len(prompt)), row("b", [*prompt, 9], len(prompt))], 8, True)
    d.step([row("b", [*prompt, 9, 9], len(prompt))], 8, True)
    assert d.active_requests == {"b"} and d.cache.num_cached_responses == 1
    # another request now drafts request a's response from the global trie
    (draft,) = d.step([row("b", [*prompt, 9, 9], len(prompt)), row("c", [0, 5, 6, 7], 3)], 8, True)[1:]
    assert draft == [8, 9, 10]  # a 3-token match drafts at most 3 tokens (max_spec_factor 1.0)


def test_a_resumed_request_keeps_its_history_and_is_cached_once(backend: str) -> None:
    d = drafter(backend)
    prompt = [1, 2, 3, 4]
    out = [*LINE, *LINE[:2]]
    d.step([row("a", [*prompt, *out], len(prompt))], 8, True)
    d.step([row("b", [7, 7, 7], 2)], 8, True)  # a is preempted: it leaves the batch
    assert d.cache.num_cached_responses == 1
    # resumed with one more token, beside b
    d.step([row("a", [*prompt, *out, 7], len(prompt)), row("b", [7, 7, 7, 7], 2)], 8, True)
    assert d.cache.num_cached_responses == 0  # a's partial response was evicted
    assert d.cache.memory_estimate()["local_trees"] == 2
    assert trie_tokens(d.cache, "a") == [*prompt, *out, 7]
    d.step([row("b", [7, 7, 7, 7, 7], 2)], 8, True)
    assert d.cache.num_cached_responses == 1  # a, once, with its whole response
