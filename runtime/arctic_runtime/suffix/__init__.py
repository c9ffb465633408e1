"""Suffix decoding: model-free speculative decoding from suffix tries (pure Python, no vLLM or torch).

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
    cache.memory_estimate()                   # node counts and estimated bytes

Settings are in ``SuffixConfig`` (units, defaults and reasons are documented per field; a bad value
raises ``SuffixConfigError``, a ``ValueError``, naming the field and its allowed range).

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
* **Cost**: appending a token costs O(max_depth); a global match O(log(max_depth)) walks; a local
  match O(log(max_depth)) list lookups. Memory: up to ``max_depth`` nodes per token (a plain trie,
  not a compressed suffix tree).
"""

from __future__ import annotations

from arctic_runtime.suffix.tree import (
    BYTES_PER_NODE,
    Draft,
    SuffixConfig,
    SuffixConfigError,
    SuffixDecodingCache,
    SuffixTree,
    TreeDraft,
    draft_limit,
    speculate_path,
    speculate_tree,
)

__all__ = [
    "BYTES_PER_NODE",
    "Draft",
    "SuffixConfig",
    "SuffixConfigError",
    "SuffixDecodingCache",
    "SuffixTree",
    "TreeDraft",
    "draft_limit",
    "speculate_path",
    "speculate_tree",
]
