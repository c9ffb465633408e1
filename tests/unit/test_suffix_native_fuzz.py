"""The native suffix backend under adversarial input: it never crashes, refuses re-entrant calls, and
a call that raises leaves the cache as it was.

Inputs thrown at it: sequences whose items' ``__index__`` mutate (clear, grow, replace) the very
sequence being read, sequences whose ``__len__`` / ``__getitem__`` change them, request ids whose
``__hash__`` / ``__eq__`` mutate the batch or call back into the cache, flags whose ``__bool__`` do,
arrays of every integer width, signed and unsigned, non-contiguous, negative-stride, Fortran-order and
read-only, arrays of the wrong dtype or shape, and integers far beyond 64 bits. Valid exotic arrays
must give exactly the Python reference's drafts (the differential tests in test_suffix_native.py
cover ordinary input).
"""

from __future__ import annotations

import gc
import random
from collections.abc import Callable, Hashable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arctic_runtime.suffix.tree import BackendChoice, SuffixConfig, SuffixDecodingCache, native_available
from tests.unit.suffix_backends import NATIVE_MISSING, NATIVE_REQUIRED, trie_tokens

np = pytest.importorskip("numpy")
pytestmark = pytest.mark.skipif(not native_available() and not NATIVE_REQUIRED, reason=NATIVE_MISSING)

ALLOWED = (TypeError, ValueError, OverflowError, IndexError, KeyError, RuntimeError)
REENTRANT = "another call on this cache is still running"
COUNT_KEYS = ("local_trees", "local_nodes", "cached_responses", "cached_tokens", "global_nodes")
CONFIG = SuffixConfig(max_depth=12, max_spec_tokens=4, max_cached_requests=3)


def state(cache: SuffixDecodingCache) -> tuple[Any, ...]:
    """Everything observable about a cache: active requests with their tokens, counts, drafts."""
    memory = cache.memory_estimate()
    active = sorted(cache.active_requests, key=repr)
    return (
        [(r, trie_tokens(cache, r), cache.speculate(r)) for r in active],
        {
            k: memory[k]
            for k in ("local_trees", "local_nodes", "cached_responses", "cached_tokens", "global_nodes")
        },
    )


def assert_consistent(cache: SuffixDecodingCache) -> None:
    """The cache still works and its counts are exact: stopping every request empties the local
    tries; finished responses pushed out of the FIFO by fresh ones, and those evicted, leave the
    global trie with no node and no token (a miscounted node would stay behind)."""
    for req in list(cache.active_requests):
        cache.stop_request(req)
    memory = cache.memory_estimate()
    assert memory["local_trees"] == memory["local_nodes"] == 0
    flush = [("flush", i) for i in range(CONFIG.max_cached_requests)]
    for req in flush:
        cache.start_request(req, [40, 41])
        cache.add_tokens(req, [42, 43, 42])
        cache.stop_request(req)
    cache.start_request("probe", [42, 43])
    assert cache.speculate("probe").token_ids == [42]
    cache.stop_request("probe", cache_response=False)
    for req in flush:
        assert cache.evict_response(req)
    memory = cache.memory_estimate()
    assert memory["global_nodes"] == memory["cached_tokens"] == memory["cached_responses"] == 0


def seeded_cache() -> SuffixDecodingCache:
    cache = SuffixDecodingCache(config=CONFIG, backend="native")
    cache.start_request("a", [1, 2, 3, 1, 2])
    cache.add_tokens("a", [3, 1])
    cache.start_request("b", [5, 6, 5])
    cache.start_request("done", [7])
    cache.add_tokens("done", [8, 9, 8])
    cache.stop_request("done")
    return cache


class Token:
    """An int-like token whose ``__index__`` runs an action first."""

    def __init__(self, value: int, action: Callable[[], object]) -> None:
        self.value = value
        self.action = action

    def __index__(self) -> int:
        self.action()
        return self.value


class Shifty:
    """A sequence whose ``__len__`` and ``__getitem__`` change it while it is read."""

    def __init__(self, items: list[Any], rng: random.Random) -> None:
        self.items = list(items)
        self.rng = rng

    def __len__(self) -> int:
        self._mutate()
        return max(0, len(self.items) + self.rng.randint(-3, 3))

    def __getitem__(self, i: Any) -> Any:
        self._mutate()
        return self.items[i]

    def _mutate(self) -> None:
        roll = self.rng.random()
        if roll < 0.2 and self.items:
            self.items.pop()
        elif roll < 0.4:
            self.items.append(self.rng.randrange(50))
        elif roll < 0.5:
            self.items.clear()


def mutations(target: list[Any], rng: random.Random) -> Callable[[], object]:
    """An action that changes `target` in place (the sequence a token sits in)."""

    def act() -> None:
        roll = rng.random()
        if roll < 0.25:
            target.clear()
        elif roll < 0.5:
            target.extend(rng.randrange(100) for _ in range(rng.randrange(50)))
        elif roll < 0.7 and target:
            target[rng.randrange(len(target))] = Token(rng.randrange(100), lambda: target.clear())
        elif roll < 0.85:
            del target[: rng.randrange(len(target) + 1)]
        else:
            gc.collect()

    return act


# ----------------------------------------------------------------------------- mutating sequences


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), kind=st.sampled_from(["list", "tuple", "shifty"]))
def test_mutating_token_sequences(seed: int, kind: str) -> None:
    """Tokens are read from a snapshot taken before any Python code runs: the tokens added are the
    sequence's items at the call, whatever their ``__index__`` does to the sequence meanwhile."""
    rng = random.Random(seed)
    cache = seeded_cache()
    tokens: list[Any] = []
    expected: list[int] = []
    for _ in range(rng.randrange(12)):
        value = rng.randrange(-5, 60)
        if rng.random() < 0.4:
            tokens.append(Token(value, mutations(tokens, rng)))
        else:
            tokens.append(value)
        expected.append(value)
    seq: Any = tokens if kind == "list" else tuple(tokens) if kind == "tuple" else Shifty(tokens, rng)
    before = state(cache)
    try:
        cache.add_tokens("a", seq)
    except ALLOWED:
        assert state(cache) == before  # nothing applied
    else:
        added = trie_tokens(cache, "a")[len(before[0][0][1]) :]
        if kind != "shifty":
            assert added == expected
        assert all(isinstance(t, int) for t in added)
    assert_consistent(cache)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_mutating_batches(seed: int) -> None:
    """sync_and_draft with request ids, flags and nested rows whose Python code mutates the batch's
    own lists while they are read: no crash; an error leaves the cache as it was."""
    rng = random.Random(seed)
    cache = seeded_cache()
    n = rng.randint(1, 4)
    ids: list[Any] = []
    rows: list[Any] = []
    flags: list[Any] = []
    counts: list[Any] = []
    prompts: list[Any] = []
    everything = [ids, rows, flags, counts, prompts]

    def chaos() -> None:
        target = rng.choice(everything)
        if target and rng.random() < 0.5:
            del target[rng.randrange(len(target)) :]
        elif rng.random() < 0.5:
            target.append(rng.randrange(5))
        if rows and rng.random() < 0.5:
            row = rng.choice(rows)
            if isinstance(row, list) and row:
                row.clear()

    class Id:
        def __init__(self, name: str) -> None:
            self.name = name

        def __hash__(self) -> int:
            if rng.random() < 0.5:
                chaos()
            return hash(self.name)

        def __eq__(self, other: object) -> bool:
            if rng.random() < 0.3:
                chaos()
            return isinstance(other, Id) and other.name == self.name

        def __repr__(self) -> str:
            return f"Id({self.name!r})"

    class Flag:
        def __bool__(self) -> bool:
            chaos()
            return rng.random() < 0.8

    for i in range(n):
        ids.append(rng.choice(["a", "b", f"new{i}", Id(f"evil{i}"), Id("a")]))
        row: list[Any] = [rng.randrange(8) for _ in range(rng.randint(0, 12))]
        for k in range(len(row)):
            if rng.random() < 0.2:
                row[k] = Token(row[k], chaos)
        rows.append(row)
        flags.append(Flag() if rng.random() < 0.5 else [1])
        counts.append(Token(len(row), chaos) if rng.random() < 0.3 else len(row))
        prompts.append(rng.randint(0, len(row)))
    before = state(cache)
    try:
        drafts = cache.sync_and_draft(ids, rows, counts, prompts, flags, None, 64)
    except ALLOWED:
        assert state(cache) == before
    else:
        assert isinstance(drafts, list) and all(isinstance(d, list) for d in drafts)
    assert_consistent(cache)


# ----------------------------------------------------------------------------- re-entrant calls


def test_reentrant_calls_are_refused() -> None:
    """Python code the cache runs (a token's __index__, an id's __hash__, a flag's __bool__) that
    calls the cache again gets RuntimeError, and the running call goes on undisturbed."""
    cache = seeded_cache()
    seen: list[str] = []

    def call_back(call: Callable[[], object]) -> Callable[[], object]:
        def act() -> None:
            try:
                call()
            except RuntimeError as exc:
                seen.append(str(exc))

        return act

    calls: list[Callable[[], object]] = [
        lambda: cache.stop_request("a"),
        lambda: cache.add_tokens("a", [1]),
        lambda: cache.speculate("a"),
        lambda: cache.start_request("x", [1]),
        lambda: cache.evict_response("done"),
        lambda: cache.sync_and_draft(["a"], [[1, 2, 3]], [3], [1], [[1]], None, 64),
        lambda: cache.memory_estimate(),
        lambda: cache.active_requests,
    ]
    for call in calls:
        before = trie_tokens(cache, "a")
        tokens: list[Any] = [Token(4, call_back(call)), 5]
        cache.add_tokens("a", tokens)
        assert trie_tokens(cache, "a") == [*before, 4, 5]
    assert len(seen) == len(calls) and all(REENTRANT in s for s in seen)

    class Id:
        def __hash__(self) -> int:
            cache.stop_request("a")  # raises RuntimeError out of __hash__
            return 1

    for bad in (
        lambda: cache.add_tokens(Id(), [1]),
        lambda: cache.start_request(Id(), [1]),
        lambda: cache.sync_and_draft([Id()], [[1]], [1], [1], [[1]], None, 64),
    ):
        before_state = state(cache)
        with pytest.raises(RuntimeError, match=REENTRANT):
            bad()
        assert state(cache) == before_state

    class Flag:
        def __bool__(self) -> bool:
            cache.add_tokens("b", [9])
            return True

    with pytest.raises(RuntimeError, match=REENTRANT):
        cache.sync_and_draft(["b"], [[5, 6, 5, 7]], [4], [3], [Flag()], None, 64)
    assert trie_tokens(cache, "b") == [5, 6, 5]
    assert_consistent(cache)


def test_a_finalizer_calling_the_cache_is_refused() -> None:
    """A request id whose __del__ calls the cache, dropped while the cache is mid-call."""
    cache = SuffixDecodingCache(config=CONFIG, backend="native")
    errors: list[BaseException] = []

    class Dying:
        def __hash__(self) -> int:
            return 7

        def __eq__(self, other: object) -> bool:
            return other is self

        def __del__(self) -> None:
            try:
                cache.memory_estimate()
            except RuntimeError as exc:
                errors.append(exc)

    req: Hashable = Dying()
    cache.start_request(req, [1, 2])
    cache.add_tokens(req, [3])
    cache.stop_request(req)  # cached under req
    del req
    for i in range(5):  # FIFO drops the response (and the last reference to its id) inside stop_request
        cache.start_request(i, [1])
        cache.add_tokens(i, [2])
        cache.stop_request(i)
    gc.collect()
    assert errors and all(REENTRANT in str(e) for e in errors)
    assert cache.num_cached_responses == 3


# ----------------------------------------------------------------------------- exotic arrays


def _history(rng: random.Random) -> dict[str, list[int]]:
    return {f"r{i}": [rng.randrange(6) for _ in range(rng.randint(1, 20))] for i in range(rng.randint(1, 4))}


DTYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]
LAYOUTS = ["c", "fortran", "strided", "negative", "readonly", "list-of-arrays"]


def exotic(table: Any, layout: str) -> Any:
    """The same values as `table` (2-D) in another memory layout."""
    if layout == "fortran":
        return np.asfortranarray(table)
    if layout == "strided":  # every other column of a wider array
        wide = np.zeros((table.shape[0], table.shape[1] * 2), dtype=table.dtype)
        wide[:, ::2] = table
        return wide[:, ::2]
    if layout == "negative":  # rows and columns both stored backwards
        back = np.ascontiguousarray(table[::-1, ::-1])
        return back[::-1, ::-1]
    if layout == "readonly":
        view = table.copy()
        view.flags.writeable = False
        return view
    if layout == "list-of-arrays":
        return [row for row in table]
    return np.ascontiguousarray(table)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    dtype=st.sampled_from(DTYPES),
    layout=st.sampled_from(LAYOUTS),
    count_kind=st.sampled_from(["list", "tuple", "int32", "int64", "uint16", "negative-stride"]),
)
def test_exotic_arrays_give_the_references_drafts(
    seed: int, dtype: str, layout: str, count_kind: str
) -> None:
    rng = random.Random(seed)
    ref = SuffixDecodingCache(config=CONFIG, backend="python")
    nat = SuffixDecodingCache(config=CONFIG, backend="native")
    history = _history(rng)
    prompt_len = {r: rng.randint(0, len(h)) for r, h in history.items()}
    for _ in range(4):
        for r in history:
            history[r] += [rng.randrange(6) for _ in range(rng.randint(1, 3))]
        ids = rng.sample(list(history), rng.randint(1, len(history)))
        width = max(len(history[r]) for r in ids) + rng.randint(0, 3)
        table = np.zeros((len(ids), width), dtype=dtype)
        for i, r in enumerate(ids):
            table[i, : len(history[r])] = history[r]
        counts = [len(history[r]) for r in ids]
        prompts = [prompt_len[r] for r in ids]

        def column(values: list[int]) -> Any:
            if count_kind == "list":
                return list(values)
            if count_kind == "tuple":
                return tuple(values)
            if count_kind == "negative-stride":
                return np.array(values[::-1], dtype=np.int64)[::-1]
            return np.array(values, dtype=count_kind)

        flags = [[1] if rng.random() < 0.85 else [] for _ in ids]
        expected = ref.sync_and_draft(ids, table.tolist(), counts, prompts, flags, None, 40)
        got = nat.sync_and_draft(ids, exotic(table, layout), column(counts), column(prompts), flags, None, 40)
        assert got == expected
        for active in ref.active_requests:
            assert trie_tokens(nat, active) == trie_tokens(ref, active)


# ----------------------------------------------------------------------------- wrong inputs

HUGE = [2**31, -(2**31) - 1, 2**63, -(2**63) - 1, 2**64, 2**200, -(2**200)]


def bad_tables() -> Iterator[tuple[str, Any]]:
    rows = np.array([[1, 2, 3, 1, 2, 3]], dtype=np.int32)
    yield "float rows", rows.astype(np.float64)
    yield "bool rows", rows.astype(bool)
    yield "object rows", rows.astype(object)
    yield "complex rows", rows.astype(np.complex64)
    yield "3-D rows", rows[None]
    yield "1-D rows", rows[0]
    yield "0-D rows", np.int32(5)
    yield "string rows", "abc"
    yield "None rows", None
    yield "empty rows", np.zeros((0, 6), dtype=np.int32)
    yield "huge token", np.array([[1, 2, 2**40]], dtype=np.int64)
    yield "huge unsigned token", np.array([[1, 2, 2**63 + 5]], dtype=np.uint64)
    for value in HUGE:
        yield f"token {value}", [[1, 2, value]]
    yield "float token", [[1, 2, 2.5]]
    yield "str token", [[1, 2, "3"]]
    yield "nested too deep", [[[1], [2]]]


@pytest.mark.parametrize(("what", "rows"), list(bad_tables()), ids=[w for w, _ in bad_tables()])
def test_wrong_token_tables_raise_with_nothing_applied(what: str, rows: Any) -> None:
    cache = seeded_cache()
    before = state(cache)
    with pytest.raises(ALLOWED):
        cache.sync_and_draft(["new", "a"], rows, [3, 8], [1, 5], [[1], [1]], None, 64)
    assert state(cache) == before
    try:  # as a token sequence it may be valid (a 1-D array), or raise with nothing applied
        cache.add_tokens("a", rows)
    except ALLOWED:
        assert state(cache) == before
    assert_consistent(cache)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    count=st.one_of(st.integers(-(2**70), 2**70), st.sampled_from(HUGE)),
    prompt=st.one_of(st.integers(-(2**70), 2**70), st.sampled_from(HUGE)),
    max_len=st.one_of(st.integers(-(2**70), 2**70), st.sampled_from(HUGE)),
    cap=st.one_of(st.none(), st.integers(-(2**70), 2**70)),
    req=st.sampled_from(["a", "new", 2**100, -(2**100), ("t", 2**80), None]),
)
def test_huge_numbers_behave_like_the_reference(
    count: int, prompt: int, max_len: int, cap: int | None, req: Any
) -> None:
    """Counts, prompt lengths, model lengths, caps and request ids far beyond 64 bits: the same drafts
    as the reference (slices clamp, rooms are exact)."""
    row = [1, 2, 3, 1, 2, 3, 1, 2, 3, 1]
    results: list[object] = []
    backends: tuple[BackendChoice, ...] = ("python", "native")
    for backend in backends:
        cache = SuffixDecodingCache(config=CONFIG, backend=backend)
        cache.start_request("a", [1, 2, 3, 1])
        try:
            results.append(cache.sync_and_draft([req], [row], [count], [prompt], [[1]], cap, max_len))
        except ALLOWED as exc:
            results.append(type(exc).__name__)
        results.append(sorted((repr(r), trie_tokens(cache, r)) for r in cache.active_requests))
    assert results[:2] == results[2:]
