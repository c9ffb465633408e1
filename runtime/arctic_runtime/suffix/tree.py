"""Suffix trie, matching and speculation: the pure-Python reference of suffix decoding.

See the package docstring (``arctic_runtime.suffix``) for the public API and its policies. This module
holds three layers:

* ``SuffixTree``: a trie over every suffix of each inserted sequence, truncated at ``max_depth``
  tokens, with occurrence counts; incremental ``extend``, exact ``remove``, ``match``.
* ``speculate_path`` / ``speculate_tree``: drafts read off a matched node.
* ``SuffixConfig`` and ``SuffixDecodingCache``: per-request local trees plus one global tree of
  recent responses, and the choice between their drafts. The cache runs either on these Python
  classes (``backend="python"``) or, by default when it is built, on the C++ extension
  ``arctic_runtime.suffix._native`` (``backend="native"``), which implements the same cache with
  identical results; see ``SuffixDecodingCache``.

Counting convention (what every count means). For a sequence ``x[0..n)`` and every start ``s``, the
path ``x[s : min(s + max_depth, n))`` is added to the trie, each node on it getting ``+1``. So a node
at depth ``d`` whose path is ``P`` has ``count`` = number of positions where ``P`` occurs (over all
sequences in the tree), and the root's count is the total number of tokens. A child's count is at
most its parent's; the difference is the number of occurrences of ``P`` that end a sequence (or sit
at depth ``max_depth``, where nodes have no children).
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from arctic_runtime.suffix._native import Cache as _NativeCache

# A node is a plain object (two slots) with one dict of children. Measured with tracemalloc on CPython
# 3.11 x86-64: 48 bytes for the object plus 224 bytes for a dict holding one child, ~272 bytes for
# the typical node of a deep, thin trie (most nodes have exactly one child). Counts above 256 and
# token ids not shared with other objects add 28 bytes each, which the estimate ignores. The native
# backend's node is 16 bytes (``_native.BYTES_PER_NODE``).
BYTES_PER_NODE = 272

# Float slack for ceil(max_spec_factor * match_len + max_spec_offset): 0.1 * 30 is 3.0000000000000004
# in binary floating point and must give 3, not 4.
_CEIL_SLACK = 1e-9


class _Node:
    """One trie node: how many times its path occurred, and its children keyed by token id."""

    __slots__ = ("children", "count")

    def __init__(self) -> None:
        self.count = 0
        self.children: dict[int, _Node] = {}


Snapshot = tuple[int, dict[int, "Snapshot"]]
"""A trie as plain data: ``(count, {token: child snapshot})``; for tests and debugging."""


class SuffixTree:
    """A trie of every suffix of each inserted sequence, truncated at ``max_depth`` tokens.

    Sequences are identified by any hashable ``seq_id``. ``extend`` appends tokens to a sequence
    (creating it on first use); ``remove`` takes out everything the sequence inserted.

    Incremental insertion: for each sequence the tree keeps its *active nodes*, the nodes of the
    suffixes ending at its last token, indexed by depth (``active[0]`` is the root, ``active[d]``
    the node of the last ``d`` tokens), for depths below ``max_depth``. Appending token ``t`` steps
    every active node into its child ``t`` (creating it if needed) and counts one more occurrence
    there, so one token costs O(max_depth) dictionary operations regardless of the sequence length.
    """

    def __init__(self, max_depth: int) -> None:
        if max_depth < 1:
            raise ValueError(f"max_depth: must be >= 1, got {max_depth}")
        self.max_depth = max_depth
        self.root = _Node()
        self._tokens: dict[Hashable, list[int]] = {}
        self._active: dict[Hashable, list[_Node]] = {}
        self._num_nodes = 0

    # ----------------------------------------------------------------------------- updates

    def extend(self, seq_id: Hashable, new_tokens: Iterable[int]) -> None:
        """Append ``new_tokens`` to sequence ``seq_id`` (a new sequence if unknown)."""
        tokens = self._tokens.get(seq_id)
        if tokens is None:
            tokens = self._tokens[seq_id] = []
            self._active[seq_id] = [self.root]
        active = self._active[seq_id]
        root = self.root
        max_depth = self.max_depth
        created = 0
        for token in new_tokens:
            root.count += 1
            stepped = [root]
            for node in active:
                child = node.children.get(token)
                if child is None:
                    child = node.children[token] = _Node()
                    created += 1
                child.count += 1
                stepped.append(child)
            if len(stepped) > max_depth:
                stepped.pop()  # a node at depth max_depth is never extended
            active = stepped
            tokens.append(token)
        self._active[seq_id] = active
        self._num_nodes += created

    def remove(self, seq_id: Hashable) -> None:
        """Take out every count ``seq_id`` added; nodes whose count reaches 0 are deleted.

        Raises ``KeyError`` for an unknown sequence. Cost: O(len(sequence) * max_depth).
        """
        tokens = self._tokens.pop(seq_id)
        del self._active[seq_id]
        root = self.root
        root.count -= len(tokens)
        n = len(tokens)
        for start in range(n):
            end = min(start + self.max_depth, n)
            node = root
            for i in range(start, end):
                token = tokens[i]
                child = node.children[token]
                child.count -= 1
                if child.count == 0:
                    # Every other occurrence of this path is gone already, so what hangs below it is
                    # only the rest of this start's path: a chain of end - i nodes.
                    del node.children[token]
                    self._num_nodes -= end - i
                    break
                node = child

    # ----------------------------------------------------------------------------- queries

    def __contains__(self, seq_id: object) -> bool:
        return seq_id in self._tokens

    def __len__(self) -> int:
        """The number of sequences in the tree."""
        return len(self._tokens)

    @property
    def num_nodes(self) -> int:
        """Nodes in the trie, not counting the root (maintained incrementally)."""
        return self._num_nodes

    def tokens(self, seq_id: Hashable) -> Sequence[int]:
        """The tokens of ``seq_id`` so far (do not modify)."""
        return self._tokens[seq_id]

    def count_nodes(self) -> int:
        """Nodes counted by walking the trie (O(nodes); for tests)."""
        total = 0
        stack = [self.root]
        while stack:
            node = stack.pop()
            total += len(node.children)
            stack.extend(node.children.values())
        return total

    def snapshot(self) -> Snapshot:
        """The whole trie as nested plain data (for tests)."""

        def snap(node: _Node) -> Snapshot:
            return (node.count, {tok: snap(child) for tok, child in sorted(node.children.items())})

        return snap(self.root)

    def walk(self, tokens: Sequence[int], start: int = 0, node: _Node | None = None) -> _Node | None:
        """The node reached from ``node`` (default: the root) along ``tokens[start:]``, or None."""
        current = self.root if node is None else node
        for i in range(start, len(tokens)):
            nxt = current.children.get(tokens[i])
            if nxt is None:
                return None
            current = nxt
        return current

    def match(
        self, context: Sequence[int], max_len: int | None = None, require_continuation: bool = True
    ) -> tuple[_Node, int]:
        """The node of the longest suffix of ``context`` found in the trie, and that suffix's length.

        Only suffixes of at most ``min(len(context), max_depth, max_len)`` tokens are tried. With
        ``require_continuation`` (the default, and what speculation needs) the suffix must also have
        been seen followed by some token, i.e. its node must have a child; then lengths are capped at
        ``max_depth - 1`` since deeper nodes never have children. Returns ``(root, 0)`` when nothing
        matches.

        Search order: the longest allowed suffix is tried first (in repetitive text it usually
        matches, for one walk of its length). If it fails, the answer is found by binary search
        over the shorter lengths. That gives the same answer as trying every length from the longest
        down, because the property is monotone: if the last ``L`` tokens occur in the trie then so
        do the last ``L - 1`` (the trie holds every suffix of every inserted path, and an occurrence
        at start ``s`` of the longer one is an occurrence at ``s + 1`` of the shorter); and if the
        longer one was followed by a token, so was the shorter. Cost: O(log(max_depth)) walks of at
        most ``max_depth`` tokens each.
        """
        limit = min(len(context), self.max_depth)
        if require_continuation:
            limit = min(limit, self.max_depth - 1)
        if max_len is not None:
            limit = min(limit, max_len)
        n = len(context)

        def probe(length: int) -> _Node | None:
            node = self.walk(context, n - length)
            if node is None or (require_continuation and not node.children):
                return None
            return node

        if limit <= 0:
            return self.root, 0
        found = probe(limit)
        if found is not None:
            return found, limit
        lo, lo_node, hi = 0, self.root, limit - 1  # lo always holds; hi is the largest untested
        while lo < hi:
            mid = (lo + hi + 1) // 2
            node = probe(mid)
            if node is None:
                hi = mid - 1
            else:
                lo, lo_node = mid, node
        return lo_node, lo

    def match_sequence(self, seq_id: Hashable, max_len: int | None = None) -> tuple[_Node, int]:
        """``match(tokens(seq_id), max_len)`` for a sequence that is in this tree, without walking.

        The suffixes of the sequence's own tail are its active nodes, so the longest one that has a
        continuation (an earlier occurrence followed by a token) is found by binary search over that
        list: no dictionary lookups at all. The sequence's own, current occurrence of the match is
        part of the node's count (see ``speculate_path``'s ``discount_self``).
        """
        active = self._active[seq_id]
        limit = min(len(active) - 1, self.max_depth - 1)
        if max_len is not None:
            limit = min(limit, max_len)
        if limit <= 0:
            return self.root, 0
        if active[limit].children:
            return active[limit], limit
        lo, hi = 0, limit - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if active[mid].children:
                lo = mid
            else:
                hi = mid - 1
        return active[lo], lo


# --------------------------------------------------------------------------------- speculation


def draft_limit(match_len: int, max_spec_tokens: int, max_spec_factor: float, max_spec_offset: float) -> int:
    """How many tokens a match of ``match_len`` tokens may draft:
    ``min(max_spec_tokens, ceil(max_spec_factor * match_len + max_spec_offset))``, at least 0."""
    by_match = math.ceil(max_spec_factor * match_len + max_spec_offset - _CEIL_SLACK)
    return max(0, min(max_spec_tokens, by_match))


def _by_count(item: tuple[int, _Node]) -> int:
    return item[1].count


def _first_denominator(node: _Node, discount_self: bool) -> int:
    return node.count - 1 if discount_self else node.count


def speculate_path(
    node: _Node, limit: int, min_token_prob: float, discount_self: bool = False
) -> tuple[list[int], list[float]]:
    """A greedy draft from ``node``: the most frequent child at each step (ties: the child inserted
    first), while the path probability stays >= ``min_token_prob``, at most ``limit`` tokens.

    The path probability of a drafted token is the product of ``child.count / parent.count`` along
    the walk: the trie's estimate that the whole draft up to and including it is accepted. Returns
    the tokens and their path probabilities; the draft's score is their sum.

    ``discount_self``: the matched node's count includes one occurrence that is the request itself,
    at its very end, whose next token is what we are drafting (so it has no child yet). That
    occurrence is no evidence, so the first denominator leaves it out. Use it for a match in the
    request's own local tree (``match_sequence``) of at least one token (the root's count has no
    such occurrence).
    """
    tokens: list[int] = []
    probs: list[float] = []
    prob = 1.0
    denominator = _first_denominator(node, discount_self)
    while len(tokens) < limit and node.children and denominator > 0:
        children = node.children
        if len(children) == 1:
            ((best_token, best),) = children.items()
        else:
            best_token, best = max(children.items(), key=_by_count)  # first of equal counts wins
        prob *= best.count / denominator
        if prob < min_token_prob:
            break
        tokens.append(best_token)
        probs.append(prob)
        node = best
        denominator = node.count
    return tokens, probs


def speculate_tree(
    node: _Node, limit: int, max_nodes: int, min_token_prob: float, discount_self: bool = False
) -> tuple[list[int], list[int], list[float]]:
    """A tree-shaped draft from ``node``: best-first expansion by path probability.

    Candidates are the children of the nodes taken so far; the most probable candidate is taken
    next (ties: the earlier candidate), until ``max_nodes`` tokens are taken or no candidate has a
    path probability >= ``min_token_prob``. No branch is deeper than ``limit`` tokens. Returns
    ``(tokens, parents, probs)``: ``parents[i]`` is the index in the lists of token ``i``'s parent,
    -1 for a child of the matched node; a parent always comes before its children. The draft's
    expected number of accepted tokens is ``sum(probs)``.
    """
    tokens: list[int] = []
    parents: list[int] = []
    probs: list[float] = []
    if limit <= 0 or max_nodes <= 0:
        return tokens, parents, probs
    order = 0  # tie-break: first pushed, first taken
    heap: list[tuple[float, int, int, int, int, _Node]] = []  # (-prob, order, parent, depth, token, node)

    def push_children(parent_node: _Node, parent_index: int, parent_prob: float, depth: int) -> None:
        nonlocal order
        denominator = (
            _first_denominator(parent_node, discount_self) if parent_index == -1 else parent_node.count
        )
        if denominator <= 0 or depth >= limit:
            return
        for token, child in parent_node.children.items():
            prob = parent_prob * child.count / denominator
            if prob >= min_token_prob:
                heapq.heappush(heap, (-prob, order, parent_index, depth + 1, token, child))
                order += 1

    push_children(node, -1, 1.0, 0)
    while heap and len(tokens) < max_nodes:
        neg_prob, _, parent_index, depth, token, child = heapq.heappop(heap)
        tokens.append(token)
        parents.append(parent_index)
        probs.append(-neg_prob)
        push_children(child, len(tokens) - 1, -neg_prob, depth)
    return tokens, parents, probs


# --------------------------------------------------------------------------------- the cache


class SuffixConfigError(ValueError):
    """A ``SuffixConfig`` field out of range; ``field`` is its name, the message says the range."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


@dataclass(frozen=True)
class SuffixConfig:
    """Settings of ``SuffixDecodingCache``; each is checked on construction (``SuffixConfigError``, a
    ``ValueError``, naming the field and its allowed range)."""

    max_depth: int = 64
    """Tokens. The depth of every suffix trie: the longest context that can be matched plus the draft
    read after it. Each appended token costs O(max_depth) and adds up to max_depth nodes, so this
    bounds both the per-step CPU cost and the memory. 64 leaves room for a 48-token match and a
    16-token draft; contexts longer than that rarely change the prediction. Range: 2..4096."""

    max_spec_tokens: int = 16
    """Tokens. The most tokens one draft may hold. The target model verifies every drafted token
    whether accepted or not, so a longer cap only pays off when long runs are accepted; 16 covers
    the long copies suffix decoding is good at while keeping the verify batch small. Matches are
    capped at ``max_depth - max_spec_tokens`` tokens so a full-length draft fits in the trie.
    Range: 1..max_depth - 1."""

    max_spec_factor: float = 1.0
    """Draft tokens per matched token: a match of ``m`` tokens drafts at most
    ``ceil(max_spec_factor * m + max_spec_offset)`` tokens. A short match is weak evidence (a
    two-token match predicts little), a long one strong; 1.0 lets a draft be as long as the context
    that supports it. Range: 0..1000 (0 with the default offset turns drafting off)."""

    max_spec_offset: float = 0.0
    """Tokens, added to the factor limit above. Positive values let short matches draft more,
    negative values require a minimum match length before anything is drafted. Default 0: the factor
    alone decides. Range: -4096..4096."""

    min_token_prob: float = 0.1
    """Probability. Drafting stops before the first token whose path probability (the trie's estimate
    that the draft up to that token is accepted) is below this. A drafted token costs verify compute
    whether accepted or not; below 10 % it is almost always wasted. Range: 0..1."""

    max_cached_requests: int = 1000
    """Responses. How many finished responses the global trie holds (FIFO: the oldest is removed
    when a new one arrives beyond the limit); 0 disables the global trie. Memory grows with the
    response tokens (up to max_depth nodes per token; a global-trie node is 24 bytes in the native
    backend, with its sibling and suffix links, ~272 bytes in the Python one: see ``memory_estimate``),
    so 1000 responses of a few hundred tokens is the order of 100s of MB natively (GBs in Python)
    in the worst case (all-distinct text) and much less for the repetitive workloads this targets.
    Range: 0..10_000_000."""

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, allowed: str) -> None:
            if not ok:
                raise SuffixConfigError(name, f"must be {allowed}, got {getattr(self, name)!r}")

        def is_int(name: str) -> bool:
            value = getattr(self, name)
            return isinstance(value, int) and not isinstance(value, bool)

        def is_real(name: str) -> bool:
            value = getattr(self, name)
            return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)

        need(is_int("max_depth") and 2 <= self.max_depth <= 4096, "max_depth", "an integer in 2..4096")
        need(
            is_int("max_spec_tokens") and 1 <= self.max_spec_tokens <= self.max_depth - 1,
            "max_spec_tokens",
            f"an integer in 1..max_depth - 1 (= {self.max_depth - 1})",
        )
        need(
            is_real("max_spec_factor") and 0 <= self.max_spec_factor <= 1000,
            "max_spec_factor",
            "a number in 0..1000",
        )
        need(
            is_real("max_spec_offset") and -4096 <= self.max_spec_offset <= 4096,
            "max_spec_offset",
            "a number in -4096..4096",
        )
        need(
            is_real("min_token_prob") and 0 <= self.min_token_prob <= 1,
            "min_token_prob",
            "a number in 0..1",
        )
        need(
            is_int("max_cached_requests") and 0 <= self.max_cached_requests <= 10_000_000,
            "max_cached_requests",
            "an integer in 0..10000000",
        )

    @property
    def max_match_len(self) -> int:
        """The longest context suffix that is matched: ``max_depth - max_spec_tokens``."""
        return self.max_depth - self.max_spec_tokens


Source = Literal["local", "global", "none"]


# Draft and TreeDraft must stay plain frozen dataclasses without __post_init__: the native backend
# builds them the way their generated __init__ does (object.__new__, then object.__setattr__ per
# field) without calling it (tests/unit/test_suffix_native.py checks this).


@dataclass(frozen=True)
class Draft:
    """A linear draft. ``score`` is the sum of the tokens' path probabilities (the expected number
    of accepted tokens); ``match_len`` the length of the matched context suffix; ``source`` which
    trie it came from ("none": nothing drafted)."""

    token_ids: list[int] = field(default_factory=list)
    probs: list[float] = field(default_factory=list)
    score: float = 0.0
    match_len: int = 0
    source: Source = "none"


@dataclass(frozen=True)
class TreeDraft:
    """A tree-shaped draft (see ``speculate_tree``): ``parents[i]`` is the index of token ``i``'s
    parent, -1 for a root child."""

    token_ids: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)
    probs: list[float] = field(default_factory=list)
    score: float = 0.0
    match_len: int = 0
    source: Source = "none"


Backend = Literal["native", "python"]
BackendChoice = Literal["auto", "native", "python"]


class NativeBackendUnavailable(ImportError):
    """``backend="native"`` was asked for but ``arctic_runtime.suffix._native`` does not import (the
    package was installed without a C++ compiler, or the build failed)."""


def _import_native() -> tuple[type[_NativeCache] | None, str]:
    try:
        from arctic_runtime.suffix._native import Cache
    except ImportError as exc:
        return None, str(exc)
    return Cache, ""


_NATIVE_CACHE, _NATIVE_IMPORT_ERROR = _import_native()


def native_available() -> bool:
    """Whether the C++ backend (``arctic_runtime.suffix._native``) is built and importable."""
    return _NATIVE_CACHE is not None


class SuffixDecodingCache:
    """Per-request local tries and a global trie of recent responses; see the package docstring.

    Settings are ``SuffixConfig``'s fields as keywords, or a whole ``config`` (which then wins).
    Request ids are any hashable values; an id may be reused once its request has stopped. Not
    thread-safe: one engine loop owns a cache.

    ``backend``: "native" runs the whole cache in the C++ extension ``arctic_runtime.suffix._native``
    (one call per request per step, no Python objects per trie node; ``NativeBackendUnavailable``,
    an ``ImportError``, if it is not built); "python" on this module's ``SuffixTree``; "auto" (the
    default) picks native when it imports. ``self.backend`` says which one runs. Both give identical
    drafts, probabilities, scores and node counts. Native-only limits: token ids must fit in a signed
    32-bit int (``OverflowError`` otherwise) and be ints (``TypeError``); the Python ``SuffixTree``
    objects (``global_tree``, ``local_tree``) exist only with ``backend="python"``.
    """

    def __init__(
        self,
        max_depth: int = SuffixConfig.max_depth,
        max_spec_tokens: int = SuffixConfig.max_spec_tokens,
        max_spec_factor: float = SuffixConfig.max_spec_factor,
        max_spec_offset: float = SuffixConfig.max_spec_offset,
        min_token_prob: float = SuffixConfig.min_token_prob,
        max_cached_requests: int = SuffixConfig.max_cached_requests,
        *,
        config: SuffixConfig | None = None,
        backend: BackendChoice = "auto",
    ) -> None:
        self.config = (
            config
            if config is not None
            else SuffixConfig(
                max_depth=max_depth,
                max_spec_tokens=max_spec_tokens,
                max_spec_factor=max_spec_factor,
                max_spec_offset=max_spec_offset,
                min_token_prob=min_token_prob,
                max_cached_requests=max_cached_requests,
            )
        )
        if backend not in ("auto", "native", "python"):
            raise ValueError(f"backend: must be 'auto', 'native' or 'python', got {backend!r}")
        if backend == "native" and _NATIVE_CACHE is None:
            raise NativeBackendUnavailable(
                "suffix decoding: backend='native' needs the C++ extension arctic_runtime.suffix._native, "
                f"which does not import ({_NATIVE_IMPORT_ERROR}); reinstall with a C++17 compiler "
                "(pip install -e .) or use backend='python'"
            )
        self._native: _NativeCache | None = None
        self.backend: Backend = "python"
        if backend != "python" and _NATIVE_CACHE is not None:
            cfg = self.config
            self._native = _NATIVE_CACHE(
                cfg.max_depth,
                cfg.max_spec_tokens,
                cfg.max_spec_factor,
                cfg.max_spec_offset,
                cfg.min_token_prob,
                cfg.max_cached_requests,
                Draft,
                TreeDraft,
            )
            self.backend = "native"
        # The Python backend's state (left empty with the native one).
        self._local: dict[Hashable, SuffixTree] = {}
        self._responses: dict[Hashable, list[int]] = {}
        self._global = SuffixTree(self.config.max_depth)
        self._cached: OrderedDict[int, Hashable] = OrderedDict()  # global-tree key -> req_id, oldest first
        self._cached_key: dict[Hashable, int] = {}  # req_id -> key of its latest cached response
        self._next_key = 0

    # ------------------------------------------------------------------------- request lifecycle

    @property
    def active_requests(self) -> frozenset[Hashable]:
        if self._native is not None:
            return self._native.active_requests()
        return frozenset(self._local)

    @property
    def num_cached_responses(self) -> int:
        if self._native is not None:
            return self._native.num_cached_responses()
        return len(self._cached)

    def _python_only(self, what: str) -> None:
        if self._native is not None:
            raise NotImplementedError(
                f"SuffixDecodingCache.{what} returns a Python SuffixTree: only with backend='python' "
                "(this cache runs on the native backend)"
            )

    @property
    def global_tree(self) -> SuffixTree:
        """The global ``SuffixTree`` (``backend="python"`` only; ``NotImplementedError`` otherwise)."""
        self._python_only("global_tree")
        return self._global

    def local_tree(self, req_id: Hashable) -> SuffixTree:
        """The request's local ``SuffixTree`` (``backend="python"`` only; ``NotImplementedError``
        otherwise)."""
        self._python_only("local_tree")
        return self._local[req_id]

    def tokens(self, req_id: Hashable) -> list[int]:
        """The request's token sequence so far: prompt + added tokens (a copy)."""
        if self._native is not None:
            return self._native.tokens(req_id)
        return list(self._local[req_id].tokens(req_id))

    def start_request(self, req_id: Hashable, prompt_ids: Iterable[int]) -> None:
        """Build the request's local trie from its prompt. ``ValueError`` if it is already active."""
        if self._native is not None:
            self._native.start_request(req_id, prompt_ids)
            return
        if req_id in self._local:
            raise ValueError(f"request {req_id!r} is already active")
        tree = SuffixTree(self.config.max_depth)
        tree.extend(req_id, prompt_ids)
        self._local[req_id] = tree
        self._responses[req_id] = []

    def add_tokens(self, req_id: Hashable, token_ids: Sequence[int]) -> None:
        """Append generated tokens: into the local trie, and to the response kept for the global one."""
        if self._native is not None:
            self._native.add_tokens(req_id, token_ids)
            return
        self._local[req_id].extend(req_id, token_ids)
        self._responses[req_id].extend(token_ids)

    def stop_request(self, req_id: Hashable, cache_response: bool = True) -> None:
        """Free the local trie; with ``cache_response`` (and the global trie on) insert the response
        into the global trie, evicting the oldest responses beyond ``max_cached_requests``."""
        if self._native is not None:
            self._native.stop_request(req_id, cache_response)
            return
        del self._local[req_id]
        response = self._responses.pop(req_id)
        if not cache_response or not response or self.config.max_cached_requests == 0:
            return
        key = self._next_key
        self._next_key += 1
        self._global.extend(key, response)
        self._cached[key] = req_id
        self._cached_key[req_id] = key
        while len(self._cached) > self.config.max_cached_requests:
            self._drop_cached(*self._cached.popitem(last=False))

    def evict_response(self, req_id: Hashable) -> bool:
        """Remove the latest response that request ``req_id`` left in the global trie, if it is still
        held (e.g. the partial response of a preempted request that is about to resume). Returns
        whether one was removed; an id with no cached response is not an error."""
        if self._native is not None:
            return self._native.evict_response(req_id)
        key = self._cached_key.get(req_id)
        if key is None:
            return False
        del self._cached[key]
        self._drop_cached(key, req_id)
        return True

    def _drop_cached(self, key: int, req_id: Hashable) -> None:
        self._global.remove(key)
        if self._cached_key.get(req_id) == key:
            del self._cached_key[req_id]

    # ------------------------------------------------------------------------- speculation

    def _candidates(
        self, req_id: Hashable, max_spec_tokens: int | None
    ) -> list[tuple[Source, _Node, int, int]]:
        """(source, matched node, match length, draft limit) of the local then the global trie."""
        cfg = self.config
        cap = cfg.max_spec_tokens if max_spec_tokens is None else min(max_spec_tokens, cfg.max_spec_tokens)
        local = self._local[req_id]
        out: list[tuple[Source, _Node, int, int]] = []
        node, length = local.match_sequence(req_id, cfg.max_match_len)
        out.append(
            ("local", node, length, draft_limit(length, cap, cfg.max_spec_factor, cfg.max_spec_offset))
        )
        if len(self._global):
            context = local.tokens(req_id)
            node, length = self._global.match(context, cfg.max_match_len)
            limit = draft_limit(length, cap, cfg.max_spec_factor, cfg.max_spec_offset)
            out.append(("global", node, length, limit))
        return out

    def speculate(self, req_id: Hashable, max_spec_tokens: int | None = None) -> Draft:
        """The better-scoring greedy draft of the local and the global trie (ties: local).

        ``max_spec_tokens`` lowers the configured cap for this call (e.g. the room left before the
        model's maximum length). The global trie is skipped when the local draft already scores the
        cap, since no draft can score more.
        """
        if self._native is not None:
            return self._native.speculate(req_id, max_spec_tokens)
        cfg = self.config
        cap = cfg.max_spec_tokens if max_spec_tokens is None else min(max_spec_tokens, cfg.max_spec_tokens)
        local = self._local[req_id]
        node, length = local.match_sequence(req_id, cfg.max_match_len)
        limit = draft_limit(length, cap, cfg.max_spec_factor, cfg.max_spec_offset)
        tokens, probs = speculate_path(node, limit, cfg.min_token_prob, discount_self=length > 0)
        best = Draft(tokens, probs, sum(probs), length, "local") if tokens else Draft()
        if len(self._global) and best.score < cap:
            node, length = self._global.match(local.tokens(req_id), cfg.max_match_len)
            limit = draft_limit(length, cap, cfg.max_spec_factor, cfg.max_spec_offset)
            tokens, probs = speculate_path(node, limit, cfg.min_token_prob)
            score = sum(probs)
            if tokens and score > best.score:
                best = Draft(tokens, probs, score, length, "global")
        return best

    def speculate_batch(self, req_ids: Iterable[Hashable], max_spec_tokens: int | None = None) -> list[Draft]:
        """``speculate`` for each request, in order."""
        if self._native is not None:
            return self._native.speculate_batch(req_ids, max_spec_tokens)
        return [self.speculate(req_id, max_spec_tokens) for req_id in req_ids]

    def add_tokens_batch(self, updates: Iterable[tuple[Hashable, Sequence[int]]]) -> None:
        """``add_tokens`` for each ``(req_id, token_ids)``."""
        if self._native is not None:
            self._native.add_tokens_batch(updates)
            return
        for req_id, token_ids in updates:
            self.add_tokens(req_id, token_ids)

    def add_tokens_and_speculate(
        self, updates: Iterable[tuple[Hashable, Sequence[int]]], max_spec_tokens: int | None = None
    ) -> list[Draft]:
        """One engine step for a batch: for each ``(req_id, token_ids)`` in order, ``add_tokens`` then
        ``speculate``; one draft per update. With the native backend this is a single call for the
        whole batch (the cheapest way to drive the cache)."""
        if self._native is not None:
            return self._native.add_tokens_and_speculate(updates, max_spec_tokens)
        drafts = []
        for req_id, token_ids in updates:
            self.add_tokens(req_id, token_ids)
            drafts.append(self.speculate(req_id, max_spec_tokens))
        return drafts

    def speculate_tree(
        self, req_id: Hashable, max_spec_tokens: int | None = None, max_nodes: int | None = None
    ) -> TreeDraft:
        """The better-scoring tree draft of the local and the global trie (ties: local). Depth is
        limited like a linear draft; ``max_nodes`` (default: the token cap) bounds the tree size."""
        if self._native is not None:
            return self._native.speculate_tree(req_id, max_spec_tokens, max_nodes)
        cfg = self.config
        budget = cfg.max_spec_tokens if max_nodes is None else max_nodes
        best = TreeDraft()
        for source, node, length, limit in self._candidates(req_id, max_spec_tokens):
            tokens, parents, probs = speculate_tree(
                node, limit, budget, cfg.min_token_prob, discount_self=source == "local" and length > 0
            )
            score = sum(probs)
            if tokens and score > best.score:
                best = TreeDraft(tokens, parents, probs, score, length, source)
        return best

    # ------------------------------------------------------------------------- accounting

    def memory_estimate(self) -> dict[str, int]:
        """Node counts and sizes. ``estimated_bytes = nodes * bytes_per_node``; ``allocated_bytes``
        is what the backend really holds.

        Python backend: ``bytes_per_node`` is ``BYTES_PER_NODE`` (272: one node object plus a
        one-child dict on CPython 3.11, measured; token lists and Python's own overheads are left out)
        and ``allocated_bytes`` equals the estimate. Native backend: ``bytes_per_node`` is the node
        record (16 bytes); ``allocated_bytes`` counts every allocation of the native cache (node
        arrays with their growth room and free nodes, hash tables, suffix links and sibling links
        of the global trie, token sequences, active-node lists).
        """
        if self._native is not None:
            (
                local_trees,
                local_nodes,
                cached_responses,
                cached_tokens,
                global_nodes,
                bytes_per_node,
                allocated,
            ) = self._native.memory()
            return {
                "local_trees": local_trees,
                "local_nodes": local_nodes,
                "cached_responses": cached_responses,
                "cached_tokens": cached_tokens,
                "global_nodes": global_nodes,
                "bytes_per_node": bytes_per_node,
                "estimated_bytes": (local_nodes + global_nodes) * bytes_per_node,
                "allocated_bytes": allocated,
            }
        local_nodes = sum(tree.num_nodes for tree in self._local.values())
        global_nodes = self._global.num_nodes
        estimated = (local_nodes + global_nodes) * BYTES_PER_NODE
        return {
            "local_trees": len(self._local),
            "local_nodes": local_nodes,
            "cached_responses": len(self._cached),
            "cached_tokens": self._global.root.count,
            "global_nodes": global_nodes,
            "bytes_per_node": BYTES_PER_NODE,
            "estimated_bytes": estimated,
            "allocated_bytes": estimated,
        }
