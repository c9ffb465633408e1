"""The cache backends the suffix tests run against: every cache-level test runs on both.

The native backend's tests are skipped when the extension is not built, except with
ARCTIC_REQUIRE_ENGINE=1 (``make test``, CI): then they run, and fail, so a missing build is never
silently skipped.
"""

from __future__ import annotations

import os
from collections.abc import Hashable
from typing import Any

import pytest

from arctic_runtime.suffix.tree import SuffixDecodingCache, SuffixTree, native_available

NATIVE_REQUIRED = os.environ.get("ARCTIC_REQUIRE_ENGINE") == "1"
NATIVE_MISSING = "arctic_runtime.suffix._native is not built (pip install -e . with a C++17 compiler)"

native_param = pytest.param(
    "native", marks=pytest.mark.skipif(not native_available() and not NATIVE_REQUIRED, reason=NATIVE_MISSING)
)
BACKENDS = ["python", native_param]

Snapshot = tuple[int, dict[int, "Snapshot"]]
"""A trie as plain data: ``(count, {token: child snapshot})``."""


def snapshot(tree: SuffixTree) -> Snapshot:
    """The whole Python ``SuffixTree`` as nested plain data."""

    def snap(node: Any) -> Snapshot:
        return (node.count, {tok: snap(child) for tok, child in sorted(node.children.items())})

    return snap(tree.root)


def count_nodes(tree: SuffixTree) -> int:
    """Nodes of a Python ``SuffixTree`` counted by walking it (O(nodes))."""
    total = 0
    stack = [tree.root]
    while stack:
        node = stack.pop()
        total += len(node.children)
        stack.extend(node.children.values())
    return total


def global_tree(cache: SuffixDecodingCache) -> SuffixTree:
    """The Python backend's global trie."""
    assert cache.backend == "python"
    return cache._global


def local_tree(cache: SuffixDecodingCache, req_id: Hashable) -> SuffixTree:
    """The Python backend's local trie of an active request."""
    assert cache.backend == "python"
    return cache._local[req_id]


def trie_tokens(cache: SuffixDecodingCache, req_id: Hashable) -> list[int]:
    """The tokens an active request's local trie holds (prompt + added tokens), on either backend."""
    if cache._native is not None:
        return cache._native._tokens(req_id)
    return list(cache._local[req_id].tokens(req_id))
