"""Ulysses / Shift Parallelism bookkeeping (pure): rank groups, head slices, the layout rules."""

from __future__ import annotations

import itertools

import pytest

from arctic_runtime.parallel import layout

SIZES = [(tp, sp) for tp in range(1, 9) for sp in range(1, 9) if tp * sp <= 8]


@pytest.mark.parametrize(("tp", "sp"), SIZES)
@pytest.mark.parametrize("engines", [1, 2])
def test_rank_groups_partition_the_world(tp: int, sp: int, engines: int) -> None:
    size = tp * sp
    world = engines * size
    groups = layout.rank_groups(world, tp, sp)
    for kind, count, width in (
        ("full", engines, size),
        ("tensor", engines * sp, tp),
        ("sequence", engines * tp, sp),
    ):
        found = getattr(groups, kind)
        assert len(found) == count and all(len(g) == width for g in found), kind
        assert sorted(itertools.chain.from_iterable(found)) == list(range(world)), kind
    for full in groups.full:
        for rank in full:
            t, s = layout.coordinates(rank - full[0], sp)
            # a rank is the t-th member of its tensor group and the s-th of its sequence group
            (tensor,) = [g for g in groups.tensor if rank in g]
            (sequence,) = [g for g in groups.sequence if rank in g]
            assert tensor.index(rank) == t and sequence.index(rank) == s
            assert set(tensor) | set(sequence) <= set(full)


def test_rank_groups_worked_example() -> None:
    # tensor 2 x ulysses 2: rank r = 2 t + s
    groups = layout.rank_groups(4, 2, 2)
    assert groups.full == [[0, 1, 2, 3]]
    assert groups.tensor == [[0, 2], [1, 3]]
    assert groups.sequence == [[0, 1], [2, 3]]


@pytest.mark.parametrize("world", [3, 6])
def test_rank_groups_refuse_a_world_that_does_not_divide(world: int) -> None:
    with pytest.raises(ValueError, match="not a multiple of tensor 2 x ulysses 2"):
        layout.rank_groups(world, 2, 2)


def query_heads_after_exchange(num_heads: int, tp: int, sp: int, rank: int) -> list[int]:
    """Global query heads rank (t, s) holds after the all-to-all: slice s of tensor shard t."""
    t, s = layout.coordinates(rank, sp)
    per_shard, per_rank = num_heads // tp, num_heads // (tp * sp)
    return list(range(t * per_shard + s * per_rank, t * per_shard + (s + 1) * per_rank))


@pytest.mark.parametrize(("tp", "sp"), SIZES)
@pytest.mark.parametrize(("heads", "kv"), [(64, 8), (32, 8), (12, 4), (8, 1), (8, 2), (16, 16), (24, 3)])
def test_both_modes_hold_the_same_heads_on_every_rank(tp: int, sp: int, heads: int, kv: int) -> None:
    """The KV cache invariance: after the exchange a rank holds exactly the query heads and KV heads
    it holds in full tensor parallelism, and every query head sits with its own KV head."""
    size = tp * sp
    if layout.head_layout_errors(heads, kv, tp, sp):
        return
    group = heads // kv
    for rank in range(size):
        q = query_heads_after_exchange(heads, tp, sp, rank)
        assert q == list(range(rank * heads // size, (rank + 1) * heads // size))  # full-TP slice
        t, s = layout.coordinates(rank, sp)
        local = layout.kv_heads_of_rank(kv, tp, t)
        received = [local[i] for i in layout.kv_head_sources(kv, tp, sp, t)[s]]
        assert received == layout.kv_heads_of_rank(kv, size, rank)
        # GQA: each query head's KV head is among the received ones
        assert {h // group for h in q} <= set(received)


def test_kv_sources_worked_examples() -> None:
    # 8 KV heads, tensor 2 x ulysses 2: shard 0 holds heads 0-3, sends 0-1 to s=0 and 2-3 to s=1
    assert layout.kv_head_sources(8, 2, 2, 0) == [[0, 1], [2, 3]]
    # 2 KV heads, tensor 2 x ulysses 4: shard 1 holds head 1 only, every sequence rank gets it
    assert layout.kv_head_sources(2, 2, 4, 1) == [[0], [0], [0], [0]]
    # 4 KV heads, tensor 1 x ulysses 8: pairs of ranks share a head
    assert layout.kv_head_sources(4, 1, 8, 0) == [[0], [0], [1], [1], [2], [2], [3], [3]]


@pytest.mark.parametrize(
    ("heads", "kv", "tp", "sp", "errors"),
    [
        (12, 4, 2, 2, []),
        (
            9,
            3,
            1,
            2,
            [
                "the model's 9 attention heads must be divisible by tensor x ulysses = 2",
                "the model's 3 KV heads must divide or be divisible by tensor x ulysses = 2",
            ],
        ),
        (9, 3, 3, 1, []),
        (
            12,
            4,
            3,
            2,
            [
                "the model's 4 KV heads must divide or be divisible by tensor = 3",
                "the model's 4 KV heads must divide or be divisible by tensor x ulysses = 6",
            ],
        ),
        (
            24,
            3,
            2,
            2,
            [
                "the model's 3 KV heads must divide or be divisible by tensor = 2",
                "the model's 3 KV heads must divide or be divisible by tensor x ulysses = 4",
            ],
        ),
        (64, 8, 2, 4, []),
        (64, 8, 4, 4, []),
    ],
)
def test_head_layout_rules(heads: int, kv: int, tp: int, sp: int, errors: list[str]) -> None:
    assert layout.head_layout_errors(heads, kv, tp, sp) == errors


@pytest.mark.parametrize(
    ("tokens", "sp", "total", "chunk"),
    [(1, 2, 2, 1), (7, 2, 8, 4), (8, 4, 8, 2), (5, 8, 8, 1), (513, 4, 516, 129)],
)
def test_padded_tokens(tokens: int, sp: int, total: int, chunk: int) -> None:
    assert layout.padded_tokens(tokens, sp) == (total, chunk)


def test_weight_bytes_per_gpu() -> None:
    # Llama-3.1-8B in bf16 (16.06 GB) on tensor 2 x ulysses 2 with shift: W/2 + W/4
    assert layout.weight_bytes_per_gpu(16_060_000_000, 2, 2, True) == (8_030_000_000, 4_015_000_000)
    assert layout.weight_bytes_per_gpu(16_060_000_000, 1, 4, False) == (16_060_000_000, 0)
