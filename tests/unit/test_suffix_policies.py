"""Suffix decoding's policies, asserted directly on both backends: every match length is scored,
the global trie is live (active requests' responses, aborts, evictions), equal counts are broken by
recency. ``test_pruned_search_equals_scoring_every_length`` checks the search's shortcuts against a
brute force that drafts from every length."""

from __future__ import annotations

from collections.abc import Hashable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arctic_runtime.suffix import Draft, SuffixConfig, SuffixDecodingCache
from arctic_runtime.suffix.tree import BackendChoice, SuffixTree, draft_limit, speculate_path
from tests.unit.suffix_backends import BACKENDS, global_tree, local_tree, trie_tokens

backends = pytest.mark.parametrize("backend", BACKENDS)


# ----------------------------------------------------------------------------- every match length


@backends
def test_a_shorter_match_wins_when_it_scores_more(backend: BackendChoice) -> None:
    # [9, 1, 2] (and [0, 9, 1, 2]) was followed by 7 once and by 8 once: 0.5 per token. [1, 2] was
    # followed by [3, 4] ten times out of twelve: 5/6 per token. With two tokens allowed, the
    # shorter match scores 5/3 > 1.
    cache = SuffixDecodingCache(max_spec_tokens=2, backend=backend)
    cache.start_request(0, [1, 2, 3, 4, 0] * 10 + [9, 1, 2, 7, 0, 9, 1, 2, 8, 0, 9, 1, 2])
    expected = Draft([3, 4], [5 / 6, 5 / 6], 5 / 6 + 5 / 6, 2, "local")
    assert cache.speculate(0) == expected
    # With four tokens allowed the 4-token match drafts [8, 0, 9, 1] at 0.5 each (score 2) and the
    # 2-token match may still draft only 2 tokens: the longer one wins.
    wider = SuffixDecodingCache(max_spec_tokens=4, backend=backend)
    wider.start_request(0, [1, 2, 3, 4, 0] * 10 + [9, 1, 2, 7, 0, 9, 1, 2, 8, 0, 9, 1, 2])
    assert wider.speculate(0) == Draft([8, 0, 9, 1], [0.5] * 4, 2.0, 4, "local")


@backends
def test_equal_scores_go_to_the_longer_match(backend: BackendChoice) -> None:
    # Every length from 1 to 5 drafts [3, 1, 2] with probability 1 (lengths 1 and 2 only 1 and 2
    # tokens): the longest of the best wins.
    cache = SuffixDecodingCache(backend=backend)
    cache.start_request("r", [1, 2, 3, 1, 2, 3, 1, 2])
    assert cache.speculate("r") == Draft([3, 1, 2], [1.0, 1.0, 1.0], 3.0, 5, "local")


# ----------------------------------------------------------------------------- recency


@backends
@pytest.mark.parametrize(("first", "second"), [(5, 6), (6, 5)])
def test_equal_counts_go_to_the_most_recent_child(backend: BackendChoice, first: int, second: int) -> None:
    # After [1, 2]: `first` once, then `second` once; no longer suffix occurs before.
    cache = SuffixDecodingCache(max_spec_tokens=1, backend=backend)
    cache.start_request(0, [1, 2, first, 1, 2, second, 1, 2])
    assert cache.speculate(0) == Draft([second], [0.5], 0.5, 2, "local")
    # In the global trie: responses [1, 2, first] then [1, 2, second], matched by a prompt [1, 2].
    cache = SuffixDecodingCache(backend=backend)
    for i, token in enumerate((first, second)):
        cache.start_request(i, [0])
        cache.add_tokens(i, [1, 2, token])
        cache.stop_request(i)
    cache.start_request("q", [1, 2])
    assert cache.speculate("q", max_spec_tokens=1) == Draft([second], [0.5], 0.5, 2, "global")
    # Counted again in the other order: 2 : 2, and `first` was counted last, so it wins though it
    # was inserted first.
    for i, token in enumerate((second, first), start=2):
        cache.start_request(i, [0])
        cache.add_tokens(i, [1, 2, token])
        cache.stop_request(i)
    assert cache.speculate("q", max_spec_tokens=1).token_ids == [first]


def test_stamps_follow_the_clock() -> None:
    tree = SuffixTree(4)
    tree.extend("a", [1, 2, 1])
    tree.extend("b", [2])
    assert tree.clock == 4
    one = tree.walk([1])
    two = tree.walk([2])
    assert one is not None and two is not None
    assert one.stamp == 3 and two.stamp == 4  # the latest increment of each
    tree.remove("b")
    assert two.stamp == 4 and two.count == 1  # removing counts leaves stamps alone


# ----------------------------------------------------------------------------- the live global trie


@backends
def test_a_request_drafts_from_another_active_response(backend: BackendChoice) -> None:
    cache = SuffixDecodingCache(backend=backend)
    cache.start_request("a", [1, 2, 3])
    cache.start_request("b", [4, 5])
    answer = [60, 61, 62, 63, 64, 65, 66, 67]
    cache.add_tokens("a", answer)  # "a" is still running
    cache.add_tokens("b", [60, 61, 62])
    draft = cache.speculate("b")
    assert draft == Draft([63, 64, 65], [1.0, 1.0, 1.0], 3.0, 3, "global")
    assert cache.num_cached_responses == 0
    memory = cache.memory_estimate()
    assert memory["cached_tokens"] == len(answer) + 3  # both live responses are in the global trie
    # The global trie off: no live insertion either.
    off = SuffixDecodingCache(max_cached_requests=0, backend=backend)
    off.start_request("a", [1, 2, 3])
    off.start_request("b", [4, 5])
    off.add_tokens("a", answer)
    off.add_tokens("b", [60, 61, 62])
    assert off.speculate("b") == Draft()
    assert off.memory_estimate()["global_nodes"] == 0


@backends
def test_the_own_occurrence_is_discounted_only_within_the_response(backend: BackendChoice) -> None:
    # [7] lies in r's live response: the global trie counts it twice (the finished response's and
    # r's own, current one), and r's own is left out: 8 follows with probability 1, not 1/2.
    cache = SuffixDecodingCache(backend=backend)
    cache.start_request("done", [0])
    cache.add_tokens("done", [7, 8])
    cache.stop_request("done")
    cache.start_request("r", [0])
    cache.add_tokens("r", [7])
    assert cache.speculate("r") == Draft([8], [1.0], 1.0, 1, "global")
    # [1, 7] reaches into r's prompt: r's occurrence of it is not in the global trie, nothing is
    # left out, and the 2-token match drafts 8 with probability 1.
    cache = SuffixDecodingCache(backend=backend)
    cache.start_request("done", [0])
    cache.add_tokens("done", [1, 7, 8])
    cache.stop_request("done")
    cache.start_request("r", [1])
    cache.add_tokens("r", [7])
    assert cache.speculate("r") == Draft([8], [1.0], 1.0, 2, "global")


@backends
def test_an_abort_takes_the_live_response_out(backend: BackendChoice) -> None:
    cache = SuffixDecodingCache(backend=backend)
    cache.start_request("a", [1])
    cache.start_request("b", [2])
    cache.add_tokens("a", [30, 31, 32, 33])
    cache.add_tokens("b", [30, 31])
    assert cache.speculate("b").token_ids == [32, 33]
    cache.stop_request("a", cache_response=False)
    assert cache.speculate("b") == Draft()
    assert cache.num_cached_responses == 0
    cache.stop_request("b", cache_response=False)
    memory = cache.memory_estimate()
    assert memory["global_nodes"] == 0 and memory["cached_tokens"] == 0


@backends
def test_only_finished_responses_count_toward_the_fifo(backend: BackendChoice) -> None:
    cache = SuffixDecodingCache(max_cached_requests=1, backend=backend)
    for req, out in (("a", [10, 11, 12]), ("b", [20, 21, 22]), ("c", [30, 31, 32])):
        cache.start_request(req, [1])
        cache.add_tokens(req, out)
    assert cache.num_cached_responses == 0  # three live responses, none finished
    assert cache.memory_estimate()["cached_tokens"] == 9
    cache.stop_request("a")
    cache.stop_request("b")  # evicts a's response
    assert cache.num_cached_responses == 1
    assert cache.memory_estimate()["cached_tokens"] == 6  # b's (finished) and c's (live)
    cache.start_request("q", [10, 11])
    assert cache.speculate("q") == Draft()
    cache.stop_request("q")  # an empty response is not cached
    assert cache.num_cached_responses == 1
    cache.start_request("q", [20, 21])
    assert cache.speculate("q").token_ids == [22]


@backends
def test_evict_response_leaves_a_live_response_of_the_same_id(backend: BackendChoice) -> None:
    cache = SuffixDecodingCache(backend=backend)
    cache.start_request("x", [1])
    cache.add_tokens("x", [40, 41, 42])
    cache.stop_request("x")  # e.g. preempted: its partial response is cached
    cache.start_request("x", [1])  # resumed under the same id
    cache.add_tokens("x", [50, 51, 52])
    cache.start_request("y", [2])
    cache.add_tokens("y", [40, 41])
    assert cache.speculate("y").token_ids == [42]
    assert cache.evict_response("x")  # the finished one
    assert not cache.evict_response("x")
    assert cache.speculate("y") == Draft()
    cache.add_tokens("y", [50, 51])
    assert cache.speculate("y").token_ids == [52]  # the live one is still there
    assert cache.memory_estimate()["cached_tokens"] == 3 + 4


# ----------------------------------------------------------------------------- the shortcuts


def _brute_force(cache: SuffixDecodingCache, req_id: Hashable, live_key: dict[Hashable, int]) -> Draft:
    """The matching policy without shortcuts: draft from every length of both tries."""
    cfg = cache.config
    context = trie_tokens(cache, req_id)
    n = len(context)
    longest = min(n, cfg.max_match_len)

    def consider(trie: SuffixTree, own_len: int, source: str, best: Draft) -> Draft:
        for length in range(longest, 0, -1):
            node = trie.walk(context, n - length)
            if node is None or not node.children:
                continue
            limit = draft_limit(length, cfg.max_spec_tokens, cfg.max_spec_factor, cfg.max_spec_offset)
            tokens, probs = speculate_path(node, limit, cfg.min_token_prob, discount_self=length <= own_len)
            candidate = Draft(tokens, probs, sum(probs), length, source)  # type: ignore[arg-type]
            if tokens and candidate.score > best.score:
                best = candidate
        return best

    best = consider(local_tree(cache, req_id), longest, "local", Draft())
    shared = global_tree(cache)
    if req_id in live_key and shared.root.count:
        own_len = len(shared.tokens(live_key[req_id]))
        best = consider(shared, own_len, "global", best)
    return best


@settings(max_examples=80, deadline=None)
@given(
    prompts=st.lists(st.lists(st.integers(0, 3), max_size=20), min_size=1, max_size=3),
    steps=st.lists(st.tuples(st.integers(0, 2), st.lists(st.integers(0, 3), max_size=4)), max_size=25),
    depth=st.sampled_from([3, 5, 8, 12]),
    factor=st.sampled_from([0.5, 1.0, 2.0]),
    min_prob=st.sampled_from([0.0, 0.1, 0.4]),
)
def test_pruned_search_equals_scoring_every_length(
    prompts: list[list[int]],
    steps: list[tuple[int, list[int]]],
    depth: int,
    factor: float,
    min_prob: float,
) -> None:
    """Skipping a length whose node has its longer neighbour's count, and stopping once no limit can
    beat the best score, change nothing (no removals here: see ``best_over_lengths``)."""
    config = SuffixConfig(
        max_depth=depth, max_spec_tokens=max(1, depth // 3), max_spec_factor=factor, min_token_prob=min_prob
    )
    cache = SuffixDecodingCache(config=config, backend="python")
    for i, prompt in enumerate(prompts):
        cache.start_request(i, prompt)
    live_key = dict(cache._live)  # the keys of the live responses in the global trie
    for which, tokens in steps:
        req = which % len(prompts)
        cache.add_tokens(req, tokens)
        for other in range(len(prompts)):
            assert cache.speculate(other) == _brute_force(cache, other, live_key)


def test_the_shortcuts_skip_most_lengths(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a long periodic context only the lengths where the count changes are drafted from."""
    import arctic_runtime.suffix.tree as tree_module

    limits: list[int] = []

    def counting(node: object, limit: int, *args: object, **kwargs: object) -> tuple[list[int], list[float]]:
        limits.append(limit)
        return speculate_path(node, limit, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(tree_module, "speculate_path", counting)
    cache = SuffixDecodingCache(backend="python")
    cache.start_request(0, list(range(10)) * 5)
    draft = cache.speculate(0)
    # Lengths 41..48 occur only as the request itself; 40 (two occurrences, 10 tokens before running
    # into the request's own tail), 30 (three) and 20 (four) are drafted; every other length has its
    # longer neighbour's count, and below 14 no draft limit can beat the best score.
    assert draft.match_len == 20 and draft.token_ids == [*range(10), *range(6)]
    assert draft.probs == [1.0] * 10 + [2 / 3] * 6
    assert limits == [16, 16, 16]
