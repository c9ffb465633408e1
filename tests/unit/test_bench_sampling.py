"""The permutation test behind ``python -m bench.sampling`` (no engine needed)."""

from __future__ import annotations

import random

from bench.sampling import compare, permutation_p, total_variation


def test_total_variation_of_empirical_distributions() -> None:
    assert total_variation([1, 1, 2, 2], [2, 2, 1, 1]) == 0.0
    assert total_variation([1, 1], [2, 2]) == 1.0
    assert total_variation([1, 2, 3, 4], [1, 1, 1, 1]) == 0.75


def test_same_distribution_passes_and_a_shift_is_caught() -> None:
    rng = random.Random(3)
    tokens = list(range(30))
    weights = [1 / (k + 1) for k in tokens]
    a = rng.choices(tokens, weights, k=200)
    b = rng.choices(tokens, weights, k=200)
    assert permutation_p(a, b, rounds=500) > 0.01
    # a fifth of the answers moved to one rare token: mass moved the way over-accepted drafts would
    shifted = [29 if i % 5 == 0 else t for i, t in enumerate(b)]
    assert permutation_p(a, shifted, rounds=500) < 0.01
    assert permutation_p(a, shifted, rounds=500) >= 1 / 501  # never below its resolution


def test_compare_covers_every_pair_and_position() -> None:
    runs = {"x": [[1, 2, 3]] * 10, "y": [[1, 2, 3]] * 10, "z": [[4, 2, 3]] * 10}
    rows = compare(runs, tokens=3)
    assert [(r["a"], r["b"]) for r in rows] == [("x", "y"), ("x", "z"), ("y", "z")]
    assert rows[0]["p_per_position"] == [1.0, 1.0, 1.0] and rows[0]["p_first3"] == 1.0
    assert rows[1]["p_per_position"][0] < 0.01 and rows[1]["p_per_position"][1] == 1.0
