"""Suffix decoding: model-free speculative decoding from suffix tries (no vLLM or torch).

A request's next tokens are drafted by matching the tail of its token sequence against

* its **local trie**: every suffix (up to ``max_depth`` tokens) of its own prompt and output so far,
  built when the request starts and extended as tokens are generated; and
* the **global trie**: the same over the responses (outputs only) of the requests that are running
  now, inserted token by token as they are generated, and of recent finished requests,

and reading the most frequent continuation after the match. This pays off on repetitive work:
editing code, agent loops, re-stating a document, several requests answering alike at once.

Public API (``SuffixDecodingCache``)::

    cache = SuffixDecodingCache(max_depth=64, max_spec_tokens=16, max_spec_factor=1.0,
                                max_spec_offset=0.0, min_token_prob=0.1, max_cached_requests=1000)
    cache.start_request(req_id, prompt_ids)   # build the local trie from the prompt
    cache.add_tokens(req_id, token_ids)       # generated tokens: local trie + live response (global)
    draft = cache.speculate(req_id)           # Draft(token_ids, probs, score, match_len, source)
    cache.stop_request(req_id)                # free the local trie, keep the response (FIFO)
    cache.stop_request(req_id, cache_response=False)   # abort: take the response out as well
    cache.evict_response(req_id)              # drop the finished response req_id left cached
    token_lists = cache.sync_and_draft(req_ids, token_rows, num_tokens, num_prompt_tokens, sampled,
                                       max_spec_tokens, max_model_len)  # an engine's batch, one call
    cache.num_active_requests                 # how many requests are active
    cache.memory_estimate()                   # node counts and bytes
    cache.backend                             # "native" or "python"

Settings are in ``SuffixConfig`` (units, defaults and reasons are documented per field; a bad value
raises ``SuffixConfigError``, a ``ValueError``, naming the field and its allowed range).

Backends (``SuffixDecodingCache(..., backend="auto" | "native" | "python")``):

* **native**: the whole cache in C++ (``native/``: the trie, the cache, drafting and the engine's
  batch in plain C++, bound to Python with nanobind in ``native/bindings.cpp``; compiled by setuptools
  when the package is installed: ``pip install -e .`` / ``make setup``; optional, so an install
  without a C++17 compiler still works). One Python->C call per request per step, or one per step
  for the engine's whole batch (``sync_and_draft``, which reads vLLM's numpy buffers in place); no
  Python object per node. Inputs are copied or pinned before any Python code can run, and a call
  arriving while another runs on the same cache raises ``RuntimeError``
  (``tests/unit/test_suffix_native_fuzz.py`` throws adversarial inputs at it). ``auto`` (the
  default) uses it when it imports; ``native`` raises ``NativeBackendUnavailable`` (an
  ``ImportError``) when it does not.
* **python**: ``tree.py``'s ``SuffixTree``, the readable reference.

Both give identical drafts (tokens, probabilities to the last bit, scores, match lengths, sources,
tie-breaking), node counts and errors; tests/unit/test_suffix_native.py checks it with random
operations.
The native backend takes token ids that fit in a signed 32-bit int (``OverflowError`` otherwise).

Policies:

* **Matching**: every match length is scored, in each trie. For ``L`` from the longest allowed,
  ``min(len(sequence), max_depth - max_spec_tokens)`` (at most ``max_depth - 1``), down to 1: if the
  request's last ``L`` tokens occur in the trie and their node has a child, a draft is read from
  that node (below) with at most ``draft_limit(L) = min(cap, ceil(max_spec_factor * L +
  max_spec_offset))`` tokens; the draft with the highest score wins, ties going to the longer match.
  (If the last ``L`` tokens occur, so do the last ``L - 1``: only lengths up to the longest that
  occurs are looked at.) Two shortcuts save work without changing the result, with one caveat
  (``tree.best_over_lengths``): a length whose node has the same count as the next longer length's
  node is skipped (every occurrence of the shorter suffix extends to the longer one, so its draft
  is the longer one's or a prefix of it; the caveat: after a removal from the global trie, stale
  stamps could make it break a tie differently, and it is skipped all the same), and the search
  stops once ``draft_limit(L)`` is at most the best score,
  since a score is a sum of probabilities of at most 1 each. In the local trie the node of length
  ``L`` is the request's active node at depth ``L`` (no walking). The request's own, current
  occurrence of the suffix (at the very end, with no next token yet) is no evidence and is
  discounted from the first denominator: always in the local trie, and in the global trie when the
  suffix lies entirely within the request's live response (``L <= len(response)``; longer
  suffixes reach into the prompt, which the global trie does not hold).
* **Drafting**: from the matched node, follow the most frequent child while the path probability
  (product of child count / parent count) stays >= ``min_token_prob``, for at most
  ``draft_limit(L)`` tokens. A draft's score is the sum of its path probabilities (expected accepted
  tokens). ``speculate`` returns the better of the local and global bests: the global one only if it
  scores strictly more (ties go to local; source "none" with no tokens if neither drafts anything).
* **Global trie**: live. ``add_tokens`` inserts the tokens into the request's response in the global
  trie at once, so concurrent requests draft from each other's answers as they are written.
  ``stop_request`` keeps a non-empty response there and enrolls it in the FIFO of finished responses;
  beyond ``max_cached_requests`` finished responses (live ones do not count) the oldest is removed,
  exactly undoing its counts (nodes reaching count 0 are deleted). ``stop_request(...,
  cache_response=False)`` (an abort) removes the response. ``evict_response(req_id)`` removes the
  latest finished response of that id still held (a live response of the same id is untouched).
  ``max_cached_requests=0`` turns the global trie off: no live insertion either.
* **Tie-breaking**: between children with equal counts, the one incremented most recently wins.
  Each trie has a clock that moves on by one per appended token; every node a token increments
  takes the clock's new value as its stamp (removals leave stamps alone). Siblings never share a
  stamp.
* **Cost**: appending a token costs O(max_depth) per trie (local and global; natively only the
  depths where the suffix is not unique touch memory, see Memory); a speculation looks at
  up to ``max_depth - max_spec_tokens`` lengths per trie, each an array lookup, and drafts only from
  the lengths where the count changes; the global trie's nodes for suffixes reaching into the
  prompt (the first ``max_depth - max_spec_tokens`` tokens of a response) come from matching
  statistics over suffix links, O(1) amortized per context token. What that costs per engine step
  is measured by ``python -m bench.suffix_speed`` (batch 64, depth 64, on one CPU core); the numbers,
  each with its machine, commit and result file, are in docs/benchmarks.md (``suffix-speed``),
  where ``make bench-report`` checks them against bench/results.
* **Memory**: the reference's trie has up to ``max_depth`` nodes per token (not a compressed suffix
  tree). A Python node is ~280 bytes (an object of three slots and a dict). A native node record is
  20 bytes (token, count, first child, next sibling, stamp) and 8 more in the global trie (previous
  sibling and suffix link), plus hash tables for nodes with more than 8 children. The native tries
  do not store unique paths node by node: where a suffix first leaves the trie, one record (a *tail
  head*, with a 16-byte tail entry) stands for the whole unique rest of that suffix, whose nodes are
  read from the stored tokens (8 bytes per token with its stamp); a second occurrence turns the
  head into a plain node. Counts and node counts are the reference's; on unique text the native
  cache holds a few bytes per trie node (``memory_estimate()["allocated_bytes"]``, against
  ``estimated_bytes`` = nodes x 20). Records come from 2 MB huge-page slabs shared by the cache's
  tries; a stopped request's chunks are reused, idle memory beyond one slab more than is in use
  goes back to the OS, deleted global records are recycled through a free list.
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
    native_available,
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
    "native_available",
]
