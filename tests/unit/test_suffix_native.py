"""The native (C++) suffix decoding backend: built, selectable, and identical to the Python reference.

The differential tests drive a Python-backend cache and a native-backend cache with the same random
operations (small vocabularies so that tokens repeat and counts tie, tiny caches so that eviction
happens, several settings, several requests active at once so that they match each other's live
responses, aborts and evictions) and require identical drafts (tokens, probabilities, scores, match
lengths, sources), identical errors and identical node counts after every operation.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import random
from collections.abc import Hashable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arctic_runtime.suffix import tree as suffix_tree
from arctic_runtime.suffix.tree import (
    Draft,
    NativeBackendUnavailable,
    SuffixConfig,
    SuffixDecodingCache,
    native_available,
)
from tests.unit.suffix_backends import BACKENDS, NATIVE_MISSING, NATIVE_REQUIRED, trie_tokens

needs_native = pytest.mark.skipif(not native_available() and not NATIVE_REQUIRED, reason=NATIVE_MISSING)
COUNT_KEYS = ("local_trees", "local_nodes", "cached_responses", "cached_tokens", "global_nodes")


def test_native_extension_is_built() -> None:
    """Fails (never skips) under ARCTIC_REQUIRE_ENGINE=1 when the extension did not build."""
    if not NATIVE_REQUIRED and not native_available():
        pytest.skip(NATIVE_MISSING)
    native = importlib.import_module("arctic_runtime.suffix._native")
    assert native.BYTES_PER_NODE == 20
    assert SuffixDecodingCache().backend == "native"


# ----------------------------------------------------------------------------- choosing a backend


def test_backend_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    assert SuffixDecodingCache(backend="python").backend == "python"
    assert SuffixDecodingCache().backend == ("native" if native_available() else "python")
    with pytest.raises(ValueError, match="backend: must be 'auto', 'native' or 'python'"):
        SuffixDecodingCache(backend="fast")  # type: ignore[arg-type]
    monkeypatch.setattr(suffix_tree, "_NATIVE_CACHE", None)  # as on a machine without a compiler
    assert SuffixDecodingCache().backend == "python"
    with pytest.raises(
        NativeBackendUnavailable, match="backend='native' needs the C\\+\\+ extension"
    ) as info:
        SuffixDecodingCache(backend="native")
    assert isinstance(info.value, ImportError)


def test_drafts_stay_plain_frozen_dataclasses() -> None:
    """The native backend fills Draft the way its generated __init__ does, without calling it: that
    is only right while it is a frozen dataclass with these fields and no __post_init__."""
    assert [f.name for f in dataclasses.fields(Draft)] == [
        "token_ids",
        "probs",
        "score",
        "match_len",
        "source",
    ]
    assert not hasattr(Draft, "__post_init__")
    assert vars(Draft)["__dataclass_params__"].frozen


@pytest.mark.parametrize("backend", BACKENDS)
def test_native_drafts_are_real_drafts(backend: str) -> None:
    cache = SuffixDecodingCache(backend=backend)  # type: ignore[arg-type]
    cache.start_request("r", [1, 2, 3, 1, 2, 3, 1, 2])
    draft = cache.speculate("r")
    assert type(draft) is Draft and draft == Draft([3, 1, 2], [1.0, 1.0, 1.0], 3.0, 5, "local")
    with pytest.raises(dataclasses.FrozenInstanceError):
        draft.score = 1.0  # type: ignore[misc]
    assert repr(draft).startswith("Draft(token_ids=[3, 1, 2]")


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("backend", BACKENDS)
def test_errors_match_the_reference(backend: str) -> None:
    cache = SuffixDecodingCache(backend=backend)  # type: ignore[arg-type]
    key = ("req", 1)
    for call in (
        lambda: cache.add_tokens(key, [1]),
        lambda: cache.speculate(key),
        lambda: cache.stop_request(key),
    ):
        with pytest.raises(KeyError) as info:
            call()
        assert info.value.args == (key,)  # a tuple id is the key, not the exception's arguments
    cache.start_request(key, [1, 2])
    with pytest.raises(ValueError, match=r"^request \('req', 1\) is already active$"):
        cache.start_request(key, [3])
    with pytest.raises(TypeError):
        cache.start_request([1], [1])  # type: ignore[arg-type]  # an unhashable id
    assert not cache.evict_response("never cached")


@needs_native
def test_native_token_ids_must_be_32_bit_ints() -> None:
    cache = SuffixDecodingCache(backend="native")
    cache.start_request(0, [2**31 - 1, -(2**31)])
    with pytest.raises(OverflowError, match="does not fit in 32 bits"):
        cache.add_tokens(0, [2**31])
    with pytest.raises(TypeError):
        cache.add_tokens(0, [1.5])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        cache.add_tokens(0, 5)  # type: ignore[arg-type]
    assert trie_tokens(cache, 0) == [2**31 - 1, -(2**31)]  # failed calls add nothing


# ----------------------------------------------------------------------------- memory


@needs_native
def test_native_memory_is_released() -> None:
    # Local tries: unique paths are kept as tails (a head record per suffix, the rest implicit), so
    # far less than a node record per trie node is held; a stopped request's chunks go back to the
    # pool, and idle memory beyond a slab more than is in use goes back to the OS.
    cache = SuffixDecodingCache(max_depth=16, max_spec_tokens=4, max_cached_requests=0, backend="native")
    rng = random.Random(0)
    empty = cache.memory_estimate()["allocated_bytes"]
    for i in range(40):
        cache.start_request(i, [rng.randrange(20) for _ in range(5000)])
    full = cache.memory_estimate()
    assert full["bytes_per_node"] == 20 and full["local_nodes"] > 40 * 5000 * 10
    assert full["allocated_bytes"] < full["estimated_bytes"] / 2
    for i in range(40):
        cache.stop_request(i)
    after = cache.memory_estimate()
    assert after["local_nodes"] == 0
    assert after["allocated_bytes"] < empty + 2**20 < full["allocated_bytes"] / 3
    # The global trie: live responses are in it, finished ones stay up to max_cached_requests;
    # emptied, it gives its memory back.
    cache = SuffixDecodingCache(max_depth=16, max_spec_tokens=4, max_cached_requests=2, backend="native")
    for i in range(20):
        cache.start_request(i, [rng.randrange(1000) for _ in range(300)])
        cache.add_tokens(i, [rng.randrange(1000) for _ in range(1000)])
    full = cache.memory_estimate()
    assert full["global_nodes"] > 20 * 1000 * 10 and full["cached_tokens"] == 20 * 1000
    assert full["allocated_bytes"] < full["estimated_bytes"] / 2  # mostly unique text: tails
    for i in range(20):
        cache.stop_request(i)
    assert cache.num_cached_responses == 2 and cache.memory_estimate()["cached_tokens"] == 2000
    for i in (18, 19):
        assert cache.evict_response(i)
    assert cache.memory_estimate()["global_nodes"] == 0
    assert cache.memory_estimate()["allocated_bytes"] < empty + 2**20


# ----------------------------------------------------------------------------- differential tests


class Pair:
    """One Python-backend and one native-backend cache, driven together and compared."""

    def __init__(self, config: SuffixConfig) -> None:
        self.ref = SuffixDecodingCache(config=config, backend="python")
        self.nat = SuffixDecodingCache(config=config, backend="native")
        self.calls = 0

    def same(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call ``method`` on both caches: same result or same exception type and message."""
        self.calls += 1
        results = []
        for cache in (self.ref, self.nat):
            try:
                results.append(("ok", getattr(cache, method)(*args, **kwargs)))
            except (KeyError, ValueError, TypeError) as exc:
                results.append((type(exc).__name__, str(exc)))
        assert results[0] == results[1], f"call {self.calls}: python {results[0]!r} != native {results[1]!r}"
        assert_exact(results[0][1], results[1][1])
        self.check_state()
        return results[0][1]

    def same_error(self, method: str, *args: Any) -> tuple[str, str]:
        """``same``, for a call that must raise on both: (exception type name, message)."""
        calls = self.calls
        message = self.same(method, *args)
        self.calls = calls + 1
        kind = type(message).__name__
        assert isinstance(message, str), f"{method}{args!r} returned {message!r} ({kind}) instead of raising"
        for cache in (self.ref, self.nat):
            try:
                getattr(cache, method)(*args)
            except (KeyError, ValueError, TypeError) as exc:
                return type(exc).__name__, str(exc)
        raise AssertionError(f"{method} did not raise")

    def same_tokens(self, req: Hashable) -> list[int] | None:
        """The request's tokens in both caches' local tries (None on both if it is not active)."""
        if req not in self.ref.active_requests:
            assert req not in self.nat.active_requests
            return None
        tokens = trie_tokens(self.ref, req)
        assert trie_tokens(self.nat, req) == tokens
        return tokens

    def check_state(self) -> None:
        ref, nat = self.ref.memory_estimate(), self.nat.memory_estimate()
        assert {k: ref[k] for k in COUNT_KEYS} == {k: nat[k] for k in COUNT_KEYS}
        assert self.ref.active_requests == self.nat.active_requests
        assert self.ref.num_cached_responses == self.nat.num_cached_responses


def assert_exact(a: object, b: object) -> None:
    """Equal, and floats equal bit for bit (== already; this also rules out 0.0 vs -0.0)."""
    if isinstance(a, float) and isinstance(b, float):
        assert math.copysign(1.0, a) == math.copysign(1.0, b) and a.hex() == b.hex()
    elif isinstance(a, list | tuple) and isinstance(b, list | tuple):
        for x, y in zip(a, b, strict=True):
            assert_exact(x, y)
    elif dataclasses.is_dataclass(a) and dataclasses.is_dataclass(b):
        assert type(a) is type(b)
        for f in dataclasses.fields(a):
            assert_exact(getattr(a, f.name), getattr(b, f.name))


def random_config(rng: random.Random) -> SuffixConfig:
    depth = rng.choice([2, 3, 4, 6, 8, 12, 24])
    return SuffixConfig(
        max_depth=depth,
        max_spec_tokens=rng.randint(1, depth - 1),
        max_spec_factor=rng.choice([0.0, 0.1, 0.5, 0.7, 1.0, 1.3, 2.0, 3]),
        max_spec_offset=rng.choice([0.0, 0.0, -2.0, -0.5, 0.3, 1.0, 4]),
        min_token_prob=rng.choice([0.0, 0.01, 0.1, 0.1, 0.25, 0.5, 1]),
        max_cached_requests=rng.choice([0, 1, 2, 3, 5, 1000]),
    )


def drive(pair: Pair, rng: random.Random, ops: int, vocab: int, ids: list[Hashable]) -> None:
    """Random operations on both caches (including some that must fail the same way)."""

    def tokens(n_max: int) -> list[int]:
        base = rng.randrange(4)  # a few offsets so that patterns recur at different spots
        return [base + rng.randrange(vocab) for _ in range(rng.randrange(n_max + 1))]

    active: list[Hashable] = []
    for _ in range(ops):
        roll = rng.random()
        req: Hashable = rng.choice(active) if active and roll < 0.9 else rng.choice(ids)
        cap = rng.choice([None, None, None, 0, 1, 2, 5, 100, -1])
        if roll < 0.12 or not active:
            prompt = tokens(30)
            pair.same("start_request", req, prompt)
            if req not in active and req in pair.ref.active_requests:
                active.append(req)
        elif roll < 0.40:
            new = tokens(6)
            pair.same("add_tokens", req, new)
        elif roll < 0.72:
            pair.same("speculate", req, cap)
        elif roll < 0.80:
            for r in rng.sample(active, rng.randint(1, len(active))):  # one engine step
                pair.same("add_tokens", r, tokens(3))
                pair.same("speculate", r, cap)
        elif roll < 0.85:
            pair.same("evict_response", rng.choice(ids))
        elif roll < 0.90:
            pair.same_tokens(req)
        else:
            keep = rng.random() < 0.8
            pair.same("stop_request", req, cache_response=keep)
            if req in active and req not in pair.ref.active_requests:
                active.remove(req)
    for req in list(active):  # everything stopped: the local tries are gone on both sides
        pair.same("stop_request", req)
    assert pair.nat.memory_estimate()["local_nodes"] == 0


@needs_native
@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), vocab=st.sampled_from([1, 2, 3, 5, 12, 40]))
def test_random_operations_give_identical_results(seed: int, vocab: int) -> None:
    rng = random.Random(seed)
    pair = Pair(random_config(rng))
    drive(pair, rng, ops=80, vocab=vocab, ids=[0, 1, 2, "a", ("b", 1)])


@needs_native
@pytest.mark.parametrize("seed", range(6))
def test_long_random_runs_give_identical_results(seed: int) -> None:
    """Longer runs, larger tries: many children per node (the hash-table path), deep tries, eviction
    with reinsertion (children re-ordered as in a dict), the kept global match across changes."""
    rng = random.Random(1000 + seed)
    depth = [8, 16, 32, 64, 5, 24][seed]
    config = SuffixConfig(
        max_depth=depth,
        max_spec_tokens=max(1, depth // 3),
        max_spec_factor=[1.0, 0.5, 2.0, 1.0, 1.0, 0.3][seed],
        min_token_prob=[0.1, 0.0, 0.05, 0.2, 0.0, 0.1][seed],
        max_cached_requests=[4, 2, 8, 1000, 3, 1][seed],
    )
    pair = Pair(config)
    drive(pair, rng, ops=700, vocab=[20, 6, 30, 12, 3, 50][seed], ids=list(range(8)))


@needs_native
@settings(max_examples=60, deadline=None)
@given(
    responses=st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=15), max_size=12),
    contexts=st.lists(st.lists(st.integers(0, 3), max_size=12), min_size=1, max_size=4),
    depth=st.integers(2, 8),
    cached=st.integers(1, 4),
)
def test_global_matches_equal_the_reference(
    responses: list[list[int]], contexts: list[list[int]], depth: int, cached: int
) -> None:
    """The native global matching (the live response's active nodes, matching statistics over suffix
    links for suffixes reaching into the prompt) against the reference's walks, across insertions,
    live responses and FIFO evictions."""
    pair = Pair(SuffixConfig(max_depth=depth, max_spec_tokens=1, max_cached_requests=cached))
    for i, context in enumerate(contexts):
        pair.same("start_request", ("ctx", i), context)
    for i, response in enumerate(responses):
        pair.same("start_request", i, [9])
        pair.same("add_tokens", i, response)
        pair.same("stop_request", i)
        for j in range(len(contexts)):
            pair.same("speculate", ("ctx", j))
            pair.same("add_tokens", ("ctx", j), response[:2])


@needs_native
def test_evicting_a_response_changes_the_global_match() -> None:
    pair = Pair(SuffixConfig(max_depth=8, max_spec_tokens=2, max_cached_requests=10))
    for req, response in (("z", [8, 8, 8]), ("x", [1, 2, 3, 4, 5])):
        pair.same("start_request", req, [9])
        pair.same("add_tokens", req, response)
        pair.same("stop_request", req)
    pair.same("start_request", "a", [1, 2, 3])
    assert pair.same("speculate", "a") == Draft([4, 5], [1.0, 1.0], 2.0, 3, "global")
    pair.same("add_tokens", "a", [4])
    assert pair.same("evict_response", "x") is True
    assert pair.same("speculate", "a") == Draft()  # x's nodes are gone, z's and a's live [4] remain
    pair.same("add_tokens", "a", [8, 8])
    assert pair.same("speculate", "a").token_ids == [8]


# ----------------------------------------------------------------------------- policies, differentially


@needs_native
@pytest.mark.parametrize("seed", range(4))
def test_concurrent_requests_give_identical_results(seed: int) -> None:
    """Many requests decoding at once, one engine step at a time (add_tokens then speculate per
    request), from a shared pool of phrases: they match each other's live responses; some are aborted,
    some finish, finished responses are evicted (FIFO and evict_response), ids are reused."""
    rng = random.Random(7000 + seed)
    depth = [8, 16, 24, 64][seed]
    config = SuffixConfig(
        max_depth=depth,
        max_spec_tokens=[3, 5, 8, 16][seed],
        max_spec_factor=[1.0, 0.5, 2.0, 1.0][seed],
        min_token_prob=[0.1, 0.0, 0.2, 0.1][seed],
        max_cached_requests=[2, 5, 1, 1000][seed],
    )
    pair = Pair(config)
    phrases = [[rng.randrange(12) for _ in range(rng.randint(2, 6))] for _ in range(8)]
    active: dict[int, int] = {}  # req_id -> tokens added
    next_id = 0
    for _ in range(120):
        while len(active) < 6:
            req = next_id % 10  # ids come back
            next_id += 1
            if req in active:
                continue
            if rng.random() < 0.3:
                pair.same("evict_response", req)
            pair.same("start_request", req, [tok for p in rng.sample(phrases, 2) for tok in p])
            active[req] = 0
        updates = []
        for req in active:
            phrase = rng.choice(phrases) if rng.random() < 0.8 else [rng.randrange(12)]
            updates.append((req, phrase[: rng.randint(1, len(phrase))]))
        for req, phrase in updates:
            pair.same("add_tokens", req, phrase)
            pair.same("speculate", req)
        for req in list(active):
            if rng.random() < 0.08:
                pair.same("stop_request", req, cache_response=rng.random() < 0.7)
                del active[req]
    for req in list(active):
        pair.same("stop_request", req)


@needs_native
def test_equal_counts_and_every_length_give_identical_results() -> None:
    """Tiny vocabularies: nearly every choice is a tie of counts (broken by recency) and nearly every
    length matches (the search over lengths and its shortcuts)."""
    for seed in range(30):
        rng = random.Random(9000 + seed)
        config = SuffixConfig(
            max_depth=rng.choice([4, 6, 10, 20]),
            max_spec_tokens=rng.choice([1, 2, 3]),
            max_spec_factor=rng.choice([0.5, 1.0, 3.0]),
            min_token_prob=rng.choice([0.0, 0.1, 0.3]),
            max_cached_requests=rng.choice([1, 3, 1000]),
        )
        pair = Pair(config)
        drive(pair, rng, ops=60, vocab=rng.choice([1, 2, 3]), ids=[0, 1, 2, 3])


@needs_native
def test_a_request_reaching_another_live_requests_tail_end() -> None:
    """Request 0's output walks into the tail that ends request 1's live response: that node is
    request 1's active node, and stays it as a plain node (found by fuzzing)."""
    pair = Pair(SuffixConfig(max_depth=6, max_spec_tokens=1, max_cached_requests=1))
    pair.same("start_request", 1, [2])
    pair.same("start_request", 0, [2, 0, 1])
    pair.same("add_tokens", 1, [0])
    pair.same("add_tokens", 0, [1, 0, 1])
    assert pair.same("speculate", 1) == Draft([1], [1.0], 1.0, 1, "global")
    pair.same("add_tokens", 1, [1, 0])
    pair.same("speculate", 1)


@needs_native
@pytest.mark.parametrize("seed", range(3))
def test_renumbered_stamps_give_identical_results(seed: int) -> None:
    """Stamps are 32 bits natively; before a trie's clock would pass 2**32 - 1 its stamps are
    renumbered in order. Move the native clocks (the global trie's and the active requests') close
    to the end, repeatedly, so that this happens mid-run in every trie."""
    rng = random.Random(5000 + seed)
    pair = Pair(SuffixConfig(max_depth=8, max_spec_tokens=3, max_cached_requests=3))
    native = pair.nat._native
    assert native is not None
    for req in range(4):
        pair.same("start_request", req, [rng.randrange(3) for _ in range(12)])
    for _ in range(40):
        native._advance_stamp_clock(2**32 - 1 - rng.randrange(30))
        for req in range(4):
            pair.same("add_tokens", req, [rng.randrange(3) for _ in range(rng.randrange(6))])
            pair.same("speculate", req)
        req = rng.randrange(4)
        pair.same("stop_request", req, cache_response=rng.random() < 0.8)
        pair.same("start_request", req, [rng.randrange(3) for _ in range(rng.randrange(12))])
    with pytest.raises(OverflowError):
        native._advance_stamp_clock(2**32)


# ----------------------------------------------------------------------------- the engine's batch


@needs_native
@pytest.mark.parametrize(("seed", "layout"), [(0, "int32"), (1, "int64"), (2, "lists"), (3, "int32")])
def test_engine_batches_give_identical_results(seed: int, layout: str) -> None:
    """sync_and_draft driven like vLLM's suffix proposer drives it: a fixed-width token buffer
    (numpy int32/int64 as InputBatch keeps it, or nested lists), rows in a changing order, some rows
    still prefilling, requests that leave (stopped by the caller) and come back (restarted from
    their whole history, their partial response evicted), caps that vary and rows near the model's
    length. Drafts, counts and cached responses stay identical to the reference's."""
    np = pytest.importorskip("numpy")
    rng = random.Random(9000 + seed)
    max_model_len = 48
    config = SuffixConfig(
        max_depth=[8, 16, 24, 12][seed], max_spec_tokens=[3, 5, 8, 4][seed], max_cached_requests=4
    )
    pair = Pair(config)
    phrases = [[rng.randrange(10) for _ in range(rng.randint(2, 5))] for _ in range(6)]
    history: dict[int, list[int]] = {}  # every request the engine holds: prompt + output
    prompt_len: dict[int, int] = {}
    next_id = 0
    for _ in range(150):
        while len(history) < 5:
            prompt = [tok for p in rng.sample(phrases, 2) for tok in p]
            history[next_id], prompt_len[next_id] = list(prompt), len(prompt)
            next_id += 1
        for req in history:  # each step emits 1..4 tokens, never past the model's length
            room = max_model_len - len(history[req])
            if room > 0:
                phrase = rng.choice(phrases)
                history[req] += phrase[: min(room, rng.randint(1, 4))]
        rows = rng.sample(list(history), rng.randint(1, len(history)))  # some are preempted this step
        width = max_model_len
        buffer = np.zeros((len(rows), width), dtype=np.int64 if layout == "int64" else np.int32)
        for i, req in enumerate(rows):
            buffer[i, : len(history[req])] = history[req]
        token_rows: Any = buffer.tolist() if layout == "lists" else buffer
        num_tokens = np.array([len(history[r]) for r in rows], dtype=np.int32)
        num_prompt = (
            [prompt_len[r] for r in rows] if layout == "lists" else np.array([prompt_len[r] for r in rows])
        )
        sampled = [[1] if rng.random() < 0.9 else [] for _ in rows]
        cap = rng.choice([None, config.max_spec_tokens, 2, 0])
        drafts = pair.same(
            "sync_and_draft", rows, token_rows, num_tokens, num_prompt, sampled, cap, max_model_len
        )
        assert len(drafts) == len(rows)
        for draft, req, flag in zip(drafts, rows, sampled, strict=True):
            assert flag or draft == []
            assert len(history[req]) + len(draft) <= max_model_len - 1 or draft == []
            if flag:
                assert pair.same_tokens(req) == history[req]  # the tries hold prompt + output
        for gone in pair.ref.active_requests - set(rows):  # left the batch this step: the caller stops it
            pair.same("stop_request", gone)
        for req in [r for r in history if len(history[r]) >= max_model_len or rng.random() < 0.03]:
            del history[req]  # finished; if still active it is stopped when it leaves a batch


@needs_native
def test_engine_batch_errors() -> None:
    """Bad input raises with nothing applied, the same error on both backends."""
    np = pytest.importorskip("numpy")
    pair = Pair(SuffixConfig())
    rows = np.array([[1, 2, 3, 0]], dtype=np.int32)
    args = (["a"], rows, [3], [2], [[1]], None, 100)
    assert pair.same("sync_and_draft", *args) == [[]]
    assert pair.same_tokens("a") == [1, 2, 3]
    assert pair.nat.num_active_requests == pair.ref.num_active_requests == 1
    two = np.array([[1, 2, 3, 4], [5, 6, 7, 8]], dtype=np.int32)
    for bad in (
        (["a", "b"], rows, [4, 3], [2, 2], [[1], [1]], None, 100),  # a row too few: nothing applied
        (["a", "b"], two, [4], [2, 2], [[1], [1]], None, 100),  # a count too few
        (["a", "b"], two, [4, 3], [2, 2], [[1]], None, 100),  # a flag too few
        (["b", "b"], two, [3, 4], [2, 2], [[1], [1]], None, 100),  # one request twice
        (["a", "c"], two, [4, 4], [2, "x"], [[1], [1]], None, 100),  # a prompt length that is no int
        (["a"], rows, [4], [2], [[1]], "x", 100),  # a cap that is no int
    ):
        assert pair.same_error("sync_and_draft", *bad)[0] in ("ValueError", "TypeError")
        assert pair.same_tokens("a") == [1, 2, 3] and pair.same_tokens("b") is None
    with pytest.raises(ValueError, match=r"^token_rows: 1 rows for 2 request ids"):
        pair.nat.sync_and_draft(["a", "b"], rows, [4, 3], [2, 2], [[1], [1]], None, 100)
    with pytest.raises(ValueError, match=r"^req_ids: request 'b' appears in rows 0 and 1"):
        pair.nat.sync_and_draft(["b", "b"], two, [3, 4], [2, 2], [[1], [1]], None, 100)
    with pytest.raises(TypeError, match="token_rows: expected a 2-D array of integers"):
        pair.nat.sync_and_draft(["a"], rows.astype(np.float32), [3], [2], [[1]], None, 100)
    with pytest.raises(TypeError, match="num_tokens: expected a 1-D array"):
        pair.nat.sync_and_draft(["a"], rows, np.array([[3]]), [2], [[1]], None, 100)
    with pytest.raises(OverflowError, match="does not fit in 32 bits"):
        pair.nat.sync_and_draft(["c"], np.array([[2**40, 1]]), [2], [1], [[1]], None, 100)
    assert pair.nat.active_requests == {"a"}
    pair.check_state()
