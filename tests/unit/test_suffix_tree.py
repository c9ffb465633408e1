"""Suffix decoding's trie, matching, speculation and cache (no engine). Cache-level tests run on both
backends (``suffix_backends.BACKENDS``); the trie-level ones test the Python reference classes."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arctic_runtime.suffix import Draft, SuffixConfig, SuffixConfigError, SuffixDecodingCache
from arctic_runtime.suffix.tree import BackendChoice, SuffixTree, draft_limit, speculate_path
from tests.unit.suffix_backends import BACKENDS, Snapshot, count_nodes, global_tree, snapshot

backends = pytest.mark.parametrize("backend", BACKENDS)


def build(sequences: Sequence[Sequence[int]], max_depth: int = 8) -> SuffixTree:
    tree = SuffixTree(max_depth)
    for i, seq in enumerate(sequences):
        tree.extend(i, seq)
    return tree


def count(tree: SuffixTree, path: Sequence[int]) -> int:
    node = tree.walk(path)
    return 0 if node is None else node.count


def brute_force_match(tree: SuffixTree, context: Sequence[int], limit: int) -> int:
    """Longest suffix first, one length at a time: the reference for ``SuffixTree.match``."""
    for length in range(min(limit, len(context), tree.max_depth - 1), 0, -1):
        node = tree.walk(context[len(context) - length :])
        if node is not None and node.children:
            return length
    return 0


# ----------------------------------------------------------------------------- the trie


def test_counts_on_a_small_sequence() -> None:
    tree = build([[1, 2, 1, 2, 3]])
    assert tree.root.count == 5
    assert count(tree, [1]) == 2 and count(tree, [2]) == 2 and count(tree, [3]) == 1
    assert count(tree, [1, 2]) == 2
    assert count(tree, [2, 1]) == 1
    assert count(tree, [1, 2, 3]) == 1
    assert count(tree, [1, 2, 1, 2, 3]) == 1
    assert count(tree, [3, 1]) == 0
    # distinct substrings: 1 2 3 | 12 21 23 | 121 212 123 | 1212 2123 | 12123
    assert tree.num_nodes == count_nodes(tree) == 12


def test_depth_is_truncated() -> None:
    tree = build([[1, 2, 3, 4, 5]], max_depth=2)
    assert count(tree, [1, 2]) == 1
    assert tree.walk([1, 2, 3]) is None
    assert tree.num_nodes == count_nodes(tree) == 5 + 4  # 5 singles, 4 pairs


def test_incremental_extend_equals_one_shot() -> None:
    one_shot = build([[4, 5, 4, 5, 6, 4, 5]], max_depth=3)
    chunked = SuffixTree(3)
    for chunk in ([4], [5, 4], [], [5, 6, 4], [5]):
        chunked.extend(0, chunk)
    assert snapshot(chunked) == snapshot(one_shot)
    assert list(chunked.tokens(0)) == [4, 5, 4, 5, 6, 4, 5]


def test_two_sequences_share_nodes_and_remove_restores_counts() -> None:
    tree = build([[1, 2, 3], [2, 3, 4]])
    assert count(tree, [2, 3]) == 2 and tree.root.count == 6
    tree.remove(0)
    assert snapshot(tree) == snapshot(build([[2, 3, 4]]))
    assert tree.num_nodes == count_nodes(tree)
    tree.remove(1)
    assert snapshot(tree) == (0, {}) and tree.num_nodes == 0 and len(tree) == 0
    with pytest.raises(KeyError):
        tree.remove(1)


# ----------------------------------------------------------------------------- matching


def test_match_finds_the_longest_suffix_with_a_continuation() -> None:
    tree = build([[7, 1, 2, 3, 9, 8, 2, 3, 5]])
    node, length = tree.match([6, 1, 2, 3])
    assert length == 3 and node is tree.walk([1, 2, 3])
    assert list(node.children) == [9]
    node, length = tree.match([0, 8, 2, 3])  # [8, 2, 3] occurs, followed by 5
    assert length == 3 and list(node.children) == [5]
    assert tree.match([4, 4, 2, 3])[1] == 2  # only [2, 3]
    assert tree.match([4, 4, 4])[1] == 0
    assert tree.match([1, 2, 3], max_len=1)[1] == 1
    # [2, 3, 5] occurs but ends the sequence: no continuation, so [3, 5] / [5] neither.
    assert tree.match([2, 3, 5])[1] == 0
    assert tree.match([2, 3, 5], require_continuation=False)[1] == 3


token_lists = st.lists(st.integers(0, 3), max_size=30)


@settings(max_examples=60, deadline=None)
@given(sequences=st.lists(token_lists, min_size=1, max_size=4), context=token_lists, limit=st.integers(0, 9))
def test_match_equals_longest_first_search(
    sequences: list[list[int]], context: list[int], limit: int
) -> None:
    tree = build(sequences, max_depth=6)
    assert tree.match(context, max_len=limit)[1] == brute_force_match(tree, context, limit)


# ----------------------------------------------------------------------------- speculation


@backends
def test_repeated_pattern_drafts_the_continuation(backend: BackendChoice) -> None:
    line = [10, 11, 12, 13, 14, 15]
    cache = SuffixDecodingCache(max_spec_tokens=8, backend=backend)
    cache.start_request("r", line * 3 + [10, 11])
    draft = cache.speculate("r")
    # Every match length is scored. The longest with a continuation (14 tokens) occurs once before,
    # one period back, so its draft runs into the request's own tail after one period: 6 tokens,
    # score 6. The last 8 tokens occur twice before: all 8 allowed tokens are drafted, the last two
    # backed by only one of the two occurrences: score 6 + 2 * 0.5 = 7, so the shorter match wins.
    assert draft.source == "local" and draft.match_len == 8
    assert draft.token_ids == [12, 13, 14, 15, 10, 11, 12, 13]
    assert draft.probs == [1.0] * 6 + [0.5, 0.5] and draft.score == 7.0  # own occurrence discounted
    # A fresh context: only [10, 11, 12] matches (preceded by 9 now, by 15 or nothing before).
    cache.add_tokens("r", [9, 10, 11, 12])
    draft = cache.speculate("r")
    assert draft.match_len == 3 and draft.token_ids == [13, 14, 15]  # factor 1.0: 3 tokens


def test_min_token_prob_cuts_the_draft() -> None:
    # After [1, 2]: 3 twice, 4 once. After [1, 2, 3]: 5 once, 6 once.
    tree = build([[1, 2, 3, 5, 0, 1, 2, 3, 6, 0, 1, 2, 4, 0]])
    node = tree.walk([1, 2])
    assert node is not None and node.count == 3
    tokens, probs = speculate_path(node, limit=5, min_token_prob=0.5)
    assert tokens == [3] and probs == [pytest.approx(2 / 3)]  # 2/3 * 1/2 = 1/3 < 0.5
    tokens, probs = speculate_path(node, limit=5, min_token_prob=0.3)
    # 5 and 6 are both seen once after [1, 2, 3]: the one counted more recently, 6, is drafted.
    assert tokens == [3, 6, 0, 1, 2] and probs == pytest.approx([2 / 3] + [1 / 3] * 4)
    assert speculate_path(node, limit=5, min_token_prob=0.7) == ([], [])


@backends
def test_spec_factor_limits_draft_length_to_the_match_length(backend: BackendChoice) -> None:
    assert draft_limit(3, 16, 1.0, 0.0) == 3
    assert draft_limit(3, 16, 0.5, 0.0) == 2
    assert draft_limit(30, 16, 0.1, 0.0) == 3  # 0.1 * 30 is 3.0000000000000004 in floating point
    assert draft_limit(0, 16, 1.0, 0.0) == 0
    assert draft_limit(2, 16, 1.0, 3.0) == 5
    assert draft_limit(2, 16, 1.0, -5.0) == 0
    assert draft_limit(40, 16, 1.0, 0.0) == 16
    stream = list(range(100, 120))
    for factor, expected in ((1.0, 2), (2.0, 4), (0.5, 1)):
        cache = SuffixDecodingCache(max_spec_factor=factor, backend=backend)
        cache.start_request(0, [*stream, 50, 51, 100, 101])  # a 2-token match of a long run
        draft = cache.speculate(0)
        assert draft.match_len == 2 and len(draft.token_ids) == expected


# ----------------------------------------------------------------------------- the cache


@backends
def test_global_tree_helps_a_second_identical_request(backend: BackendChoice) -> None:
    prompt = [1, 2, 3, 4]
    output = [50 + (i * 7) % 13 for i in range(40)]  # no repetition inside one response
    cache = SuffixDecodingCache(backend=backend)

    def replay(req_id: int) -> list[Draft]:
        cache.start_request(req_id, prompt)
        drafts, produced = [], 0
        while produced < len(output):
            draft = cache.speculate(req_id)
            drafts.append(draft)
            hits = 0
            while hits < len(draft.token_ids) and produced + hits < len(output):
                if draft.token_ids[hits] != output[produced + hits]:
                    break
                hits += 1
            accepted = output[produced : produced + hits + 1]
            cache.add_tokens(req_id, accepted)
            produced += len(accepted)
        cache.stop_request(req_id)
        return drafts

    first, second = replay(0), replay(1)
    assert all(d.source != "global" for d in first)
    assert any(d.source == "global" for d in second)
    assert len(second) < len(first) / 2
    assert cache.num_cached_responses == 2


@backends
def test_eviction_is_fifo_and_bounded(backend: BackendChoice) -> None:
    cache = SuffixDecodingCache(max_cached_requests=2, backend=backend)
    responses = [[10, 11, 12], [20, 21, 22], [30, 31, 32], [40, 41, 42]]
    for i, response in enumerate(responses):
        cache.start_request(i, [1])
        cache.add_tokens(i, response)
        cache.stop_request(i)
        assert cache.num_cached_responses == min(i + 1, 2)
    memory = cache.memory_estimate()
    assert memory["cached_responses"] == 2 and memory["cached_tokens"] == 6
    assert memory["global_nodes"] == 2 * (3 + 2 + 1)
    assert memory["estimated_bytes"] == memory["global_nodes"] * memory["bytes_per_node"]
    assert memory["allocated_bytes"] >= memory["estimated_bytes"]
    if backend == "python":  # the Python SuffixTree itself
        assert snapshot(global_tree(cache)) == snapshot(build(responses[2:], max_depth=64))
        assert memory["global_nodes"] == count_nodes(global_tree(cache))
    # Only the last two responses are left: 40 41 is continued by 42, 10 11 is gone.
    cache.start_request("y", [40, 41])
    assert cache.speculate("y").token_ids == [42]
    cache.stop_request("y", cache_response=False)
    cache.start_request("z", [10, 11])
    assert cache.speculate("z").source == "none"


@backends
def test_disabled_global_tree_and_aborts_cache_nothing(backend: BackendChoice) -> None:
    off = SuffixDecodingCache(max_cached_requests=0, backend=backend)
    off.start_request(0, [1])
    off.add_tokens(0, [5, 6, 7])
    off.stop_request(0)
    assert off.num_cached_responses == 0 and off.memory_estimate()["global_nodes"] == 0
    on = SuffixDecodingCache(backend=backend)
    on.start_request(0, [1])
    on.add_tokens(0, [5, 6, 7])
    on.stop_request(0, cache_response=False)
    assert on.num_cached_responses == 0 and on.memory_estimate()["global_nodes"] == 0


@backends
def test_stop_request_frees_the_local_tree(backend: BackendChoice) -> None:
    cache = SuffixDecodingCache(backend=backend)
    cache.start_request("a", [1, 2, 3, 1, 2])
    cache.start_request("b", [4, 5])
    assert cache.active_requests == {"a", "b"}
    assert cache.memory_estimate()["local_nodes"] > 0
    with pytest.raises(ValueError, match="already active"):
        cache.start_request("a", [1])
    cache.stop_request("a")
    cache.stop_request("b")
    assert cache.active_requests == frozenset()
    assert cache.memory_estimate()["local_nodes"] == 0
    with pytest.raises(KeyError):
        cache.speculate("a")
    cache.start_request("a", [9])  # an id can be reused once stopped
    assert cache.speculate("a") == Draft()


# ----------------------------------------------------------------------------- eviction property


@settings(max_examples=40, deadline=None)
@given(
    sequences=st.lists(st.lists(st.integers(0, 4), max_size=25), min_size=1, max_size=6),
    removed=st.sets(st.integers(0, 5)),
    depth=st.integers(1, 7),
)
def test_remove_leaves_exactly_the_tree_of_the_rest(
    sequences: list[list[int]], removed: set[int], depth: int
) -> None:
    tree = SuffixTree(depth)
    for i, seq in enumerate(sequences):  # inserted in two chunks: extend is incremental
        tree.extend(i, seq[: len(seq) // 2])
    for i, seq in enumerate(sequences):
        tree.extend(i, seq[len(seq) // 2 :])
    gone = {i for i in removed if i < len(sequences)}
    for i in sorted(gone):
        tree.remove(i)
    rest = SuffixTree(depth)
    for i, seq in enumerate(sequences):
        if i not in gone:
            rest.extend(i, seq)
    assert snapshot(tree) == snapshot(rest)
    assert tree.num_nodes == count_nodes(tree) == rest.num_nodes
    for i in range(len(sequences)):
        if i not in gone:
            tree.remove(i)
    empty: Snapshot = (0, {})
    assert snapshot(tree) == empty and tree.num_nodes == 0


@settings(max_examples=25, deadline=None)
@given(responses=st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=12), max_size=10))
def test_global_tree_holds_exactly_the_last_responses(responses: list[list[int]]) -> None:
    # The Python backend's SuffixTree (the native one is compared with it in test_suffix_native.py).
    cache = SuffixDecodingCache(max_depth=6, max_spec_tokens=2, max_cached_requests=3, backend="python")
    for i, response in enumerate(responses):
        cache.start_request(i, [9])
        cache.add_tokens(i, response)
        cache.stop_request(i)
    assert snapshot(global_tree(cache)) == snapshot(build(responses[-3:], max_depth=6))


# ----------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("kwargs", "field_name"),
    [
        ({"max_depth": 1}, "max_depth"),
        ({"max_depth": 10, "max_spec_tokens": 10}, "max_spec_tokens"),
        ({"max_spec_tokens": 0}, "max_spec_tokens"),
        ({"max_spec_factor": -0.5}, "max_spec_factor"),
        ({"max_spec_factor": float("nan")}, "max_spec_factor"),
        ({"max_spec_offset": 1e9}, "max_spec_offset"),
        ({"min_token_prob": 1.5}, "min_token_prob"),
        ({"max_cached_requests": -1}, "max_cached_requests"),
        ({"max_depth": True}, "max_depth"),
    ],
)
def test_invalid_config_names_the_field(kwargs: dict[str, float], field_name: str) -> None:
    with pytest.raises(SuffixConfigError, match=rf"^{field_name}: must be .* got ") as info:
        SuffixConfig(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field_name
    for backend in ("auto", "python"):
        with pytest.raises(ValueError, match=rf"^{field_name}: "):
            SuffixDecodingCache(**kwargs, backend=backend)  # type: ignore[arg-type]


def test_default_config_is_valid_and_documented() -> None:
    config = SuffixConfig()
    assert config.max_match_len == config.max_depth - config.max_spec_tokens > 0
    assert SuffixDecodingCache().config == config
