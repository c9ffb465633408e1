"""Suffix decoding: model-free speculative decoding from suffix tries (no vLLM or torch).

A request's next tokens are drafted by matching the tail of its token sequence against

* its **local trie**: every suffix (up to ``max_depth`` tokens) of its own prompt and output so far,
  built when the request starts and extended as tokens are generated; and
* the **global trie**: the same over the responses (outputs only) of recent finished requests,

and reading the most frequent continuation after the match. This pays off on repetitive work:
editing code, agent loops, re-stating a document.

Public API (``SuffixDecodingCache``)::

    cache = SuffixDecodingCache(max_depth=64, max_spec_tokens=16, max_spec_factor=1.0,
                                max_spec_offset=0.0, min_token_prob=0.1, max_cached_requests=1000)
    cache.start_request(req_id, prompt_ids)   # build the local trie from the prompt
    cache.add_tokens(req_id, token_ids)       # generated tokens: local trie + the recorded response
    draft = cache.speculate(req_id)           # Draft(token_ids, probs, score, match_len, source)
    drafts = cache.speculate_batch(req_ids)   # one Draft per request, in order
    tree = cache.speculate_tree(req_id)       # TreeDraft(token_ids, parents, probs, ...)
    cache.stop_request(req_id)                # free the local trie, cache the response globally
    cache.stop_request(req_id, cache_response=False)   # abort: free without caching
    cache.evict_response(req_id)              # drop the response req_id left in the global trie
    drafts = cache.add_tokens_and_speculate([(req_id, token_ids), ...])  # a whole step, one call
    cache.memory_estimate()                   # node counts and bytes
    cache.backend                             # "native" or "python"

Settings are in ``SuffixConfig`` (units, defaults and reasons are documented per field; a bad value
raises ``SuffixConfigError``, a ``ValueError``, naming the field and its allowed range).

Backends (``SuffixDecodingCache(..., backend="auto" | "native" | "python")``):

* **native**: the whole cache in C++ (``_native.cpp``, plain CPython C API, compiled by setuptools
  when the package is installed: ``pip install -e .`` / ``make setup``; optional, so an install
  without a C++17 compiler still works). One Python->C call per request per step (or one per step
  with ``add_tokens_and_speculate``), no Python object per node. ``auto`` (the default) uses it when
  it imports; ``native`` raises ``NativeBackendUnavailable`` (an ``ImportError``) when it does not.
* **python**: ``tree.py``'s ``SuffixTree``, the readable reference; ``global_tree`` and
  ``local_tree`` (which return ``SuffixTree`` objects) exist only on this backend.

Both give identical drafts (tokens, probabilities to the last bit, scores, match lengths, sources,
tie-breaking) and node counts; tests/unit/test_suffix_native.py checks it with random operations.
The native backend takes token ids that fit in a signed 32-bit int (``OverflowError`` otherwise).

Policies:

* **Matching**: the longest suffix of the request's sequence, at most
  ``max_depth - max_spec_tokens`` tokens, that occurs in the trie *and* has been followed by some
  token there. Longest length first, then binary search over shorter lengths (equivalent to trying
  them one by one from the longest, because a matching suffix's own suffixes match too); see
  ``SuffixTree.match``. In the local trie the request's own tail is already indexed, so its match
  is found among the request's active nodes without walking (``SuffixTree.match_sequence``).
* **Drafting**: from the matched node, follow the most frequent child while the path probability
  (product of child count / parent count) stays >= ``min_token_prob``, for at most
  ``min(max_spec_tokens, ceil(max_spec_factor * match_len + max_spec_offset))`` tokens. A draft's
  score is the sum of its path probabilities (expected accepted tokens); ``speculate`` returns the
  better of the local and global drafts (ties go to local; source "none" with no tokens if neither
  drafts anything).
* **Global trie eviction**: FIFO by finishing time. Each ``stop_request`` with a non-empty response
  inserts it; once more than ``max_cached_requests`` responses are held, the oldest is removed,
  exactly undoing its counts (nodes reaching count 0 are deleted). ``max_cached_requests=0``
  disables the global trie. Aborted requests (``cache_response=False``) are never cached.
* **Cost**: appending a token costs O(max_depth); a local match O(log(max_depth)) list lookups; a
  global match O(log(max_depth)) walks in Python, O(1) amortized lookups per appended token
  natively (suffix links; recomputed from the last ``max_depth - max_spec_tokens`` tokens after
  the global trie changed). Measured with ``python -m bench.suffix_speed`` (64 requests, depth 64,
  update + speculate for the whole batch, one core of a shared AMD EPYC VM, CPython 3.11): ~17-21
  ms per engine step in Python, ~0.16-0.24 ms natively (one call per request) and ~0.15-0.17 ms
  with ``add_tokens_and_speculate`` (one call per step).
* **Memory**: up to ``max_depth`` nodes per token (a plain trie, not a compressed suffix tree). A
  node is ~272 bytes in Python (an object and a dict) and 16 bytes natively (token, count, first
  child, next sibling; plus ~8 bytes per global-trie node for sibling and suffix links, hash tables
  for nodes with more than 8 children, and pool slack: ~20 bytes per node in all, reported as
  ``memory_estimate()["allocated_bytes"]``). Native nodes come from 2 MB huge-page slabs shared by
  the cache's tries; a stopped request's chunks are reused, idle memory beyond one slab more than
  is in use goes back to the OS, evicted global nodes are recycled through a free list.
"""

from __future__ import annotations

from arctic_runtime.suffix.tree import (
    BYTES_PER_NODE,
    Backend,
    BackendChoice,
    Draft,
    NativeBackendUnavailable,
    SuffixConfig,
    SuffixConfigError,
    SuffixDecodingCache,
    SuffixTree,
    TreeDraft,
    draft_limit,
    native_available,
    speculate_path,
    speculate_tree,
)

__all__ = [
    "BYTES_PER_NODE",
    "Backend",
    "BackendChoice",
    "Draft",
    "NativeBackendUnavailable",
    "SuffixConfig",
    "SuffixConfigError",
    "SuffixDecodingCache",
    "SuffixTree",
    "TreeDraft",
    "draft_limit",
    "native_available",
    "speculate_path",
    "speculate_tree",
]
