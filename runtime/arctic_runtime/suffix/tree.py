"""Suffix trie, matching and speculation: the pure-Python reference of suffix decoding.

See the package docstring (``arctic_runtime.suffix``) for the public API and its policies. This module
holds three layers:

* ``SuffixTree``: a trie over every suffix of each inserted sequence, truncated at ``max_depth``
  tokens, with occurrence counts and recency stamps; incremental ``extend``, exact ``remove``,
  ``match``.
* ``speculate_path``: a draft read off a matched node.
* ``SuffixConfig`` and ``SuffixDecodingCache``: per-request local trees plus one global tree of the
  responses of active and recently finished requests, the search over match lengths and the choice
  between the tries' drafts. The cache runs either on these Python
  classes (``backend="python"``) or, by default when it is built, on the C++ extension
  ``arctic_runtime.suffix._native`` (``backend="native"``), which implements the same cache with
  identical results; see ``SuffixDecodingCache``.

Counting convention (what every count means). For a sequence ``x[0..n)`` and every start ``s``, the
path ``x[s : min(s + max_depth, n))`` is added to the trie, each node on it getting ``+1``. So a node
at depth ``d`` whose path is ``P`` has ``count`` = number of positions where ``P`` occurs (over all
sequences in the tree), and the root's count is the total number of tokens. A child's count is at
most its parent's; the difference is the number of occurrences of ``P`` that end a sequence (or sit
at depth ``max_depth``, where nodes have no children).

Recency convention. Each trie has a clock that moves on by one per appended token; every node whose
count that token increments gets the clock's new value as its ``stamp`` (removing counts leaves
stamps alone). Siblings never share a stamp (one token increments at most one child of a node), so
"the most recently incremented child" is always well defined; it breaks ties between equal counts.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from operator import index
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from arctic_runtime.suffix._native import Cache as _NativeCache

# A node is a plain object (three slots) with one dict of children. Measured with tracemalloc on
# CPython 3.11 x86-64: 56 bytes for the object plus 224 bytes for a dict holding one child, ~280 bytes
# for the typical node of a deep, thin trie (most nodes have exactly one child). Counts above 256 and
# token ids not shared with other objects add 28 bytes each, which the estimate ignores (a stamp is
# shared by the up to max_depth nodes one token increments). The native backend's node is 20 bytes
# (``_native.BYTES_PER_NODE``).
BYTES_PER_NODE = 280

# Float slack for ceil(max_spec_factor * match_len + max_spec_offset): 0.1 * 30 is 3.0000000000000004
# in binary floating point and must give 3, not 4.
_CEIL_SLACK = 1e-9


class _Node:
    """One trie node: how many times its path occurred, when it was last counted (the trie's clock
    at its latest increment), and its children keyed by token id."""

    __slots__ = ("children", "count", "stamp")

    def __init__(self) -> None:
        self.count = 0
        self.stamp = 0
        self.children: dict[int, _Node] = {}


class SuffixTree:
    """A trie of every suffix of each inserted sequence, truncated at ``max_depth`` tokens.

    Sequences are identified by any hashable ``seq_id``. ``extend`` appends tokens to a sequence
    (creating it on first use); ``remove`` takes out everything the sequence inserted.

    Incremental insertion: for each sequence the tree keeps its *active nodes*, the nodes of the
    suffixes ending at its last token, indexed by depth (``active[0]`` is the root, ``active[d]``
    the node of the last ``d`` tokens), for depths below ``max_depth``. Appending token ``t`` steps
    every active node into its child ``t`` (creating it if needed) and counts one more occurrence
    there, so one token costs O(max_depth) dictionary operations regardless of the sequence length.
    Each appended token also moves the trie's ``clock`` on by one and stamps the nodes it counted
    with it (see the module docstring).
    """

    def __init__(self, max_depth: int) -> None:
        if max_depth < 1:
            raise ValueError(f"max_depth: must be >= 1, got {max_depth}")
        self.max_depth = max_depth
        self.root = _Node()
        self._tokens: dict[Hashable, list[int]] = {}
        self._active: dict[Hashable, list[_Node]] = {}
        self._num_nodes = 0
        self.clock = 0
        """Tokens appended so far (over all sequences, never decreasing): the latest stamp."""

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
        clock = self.clock
        for token in new_tokens:
            clock += 1
            root.count += 1
            stepped = [root]
            for node in active:
                child = node.children.get(token)
                if child is None:
                    child = node.children[token] = _Node()
                    created += 1
                child.count += 1
                child.stamp = clock
                stepped.append(child)
            if len(stepped) > max_depth:
                stepped.pop()  # a node at depth max_depth is never extended
            active = stepped
            tokens.append(token)
        self.clock = clock
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

    def active_nodes(self, seq_id: Hashable) -> Sequence[_Node]:
        """The nodes of the suffixes ending at the last token of ``seq_id``, by length: item ``d``
        is the node of its last ``d`` tokens (item 0 the root), for ``d < min(len, max_depth)`` + 1
        (do not modify). Each count includes the sequence's own, current occurrence."""
        return self._active[seq_id]

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
        ``require_continuation`` (the default) the suffix must also have been seen followed by some
        token, i.e. its node must have a child; then lengths are capped at ``max_depth - 1`` since
        deeper nodes never have children. Returns ``(root, 0)`` when nothing matches. (The cache's
        speculation scores every length, see ``SuffixDecodingCache``; it uses this with
        ``require_continuation=False`` for the longest length that occurs at all.)

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


# --------------------------------------------------------------------------------- speculation


def draft_limit(match_len: int, max_spec_tokens: int, max_spec_factor: float, max_spec_offset: float) -> int:
    """How many tokens a match of ``match_len`` tokens may draft:
    ``min(max_spec_tokens, ceil(max_spec_factor * match_len + max_spec_offset))``, at least 0."""
    by_match = math.ceil(max_spec_factor * match_len + max_spec_offset - _CEIL_SLACK)
    return max(0, min(max_spec_tokens, by_match))


def _by_count_then_recency(item: tuple[int, _Node]) -> tuple[int, int]:
    node = item[1]
    return node.count, node.stamp


def _first_denominator(node: _Node, discount_self: bool) -> int:
    return node.count - 1 if discount_self else node.count


def speculate_path(
    node: _Node, limit: int, min_token_prob: float, discount_self: bool = False
) -> tuple[list[int], list[float]]:
    """A greedy draft from ``node``: the most frequent child at each step (ties: the child counted
    most recently, i.e. the highest ``stamp``), while the path probability stays >=
    ``min_token_prob``, at most ``limit`` tokens.

    The path probability of a drafted token is the product of ``child.count / parent.count`` along
    the walk: the trie's estimate that the whole draft up to and including it is accepted. Returns
    the tokens and their path probabilities; the draft's score is their sum.

    ``discount_self``: the matched node's count includes one occurrence that is the request itself,
    at its very end, whose next token is what we are drafting (so it has no child yet). That
    occurrence is no evidence, so the first denominator leaves it out. Use it for a match of at
    least one token in the request's own local tree, and in the global tree when the matched suffix
    lies within the request's live response there (the root's count has no such occurrence).
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
            best_token, best = max(children.items(), key=_by_count_then_recency)
        prob *= best.count / denominator
        if prob < min_token_prob:
            break
        tokens.append(best_token)
        probs.append(prob)
        node = best
        denominator = node.count
    return tokens, probs


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
    """Responses. How many finished responses the global trie holds besides the live responses of
    the running requests (FIFO: the oldest is removed when a new one finishes beyond the limit); 0
    disables the global trie, live insertion included. Memory grows with the response tokens: the
    reference trie has up to max_depth nodes per token (~280 bytes each in the Python backend, so
    1000 responses of a few hundred tokens can take GBs there); the native backend stores unique
    paths as tails read from the stored tokens, so it holds a record of 28 bytes per node where texts
    share paths and a few tens of bytes per token elsewhere (see ``memory_estimate``): tens of MB
    for such a cache. Range: 0..10_000_000."""

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


# Draft must stay a plain frozen dataclass without __post_init__: the native backend builds it the
# way its generated __init__ does (object.__new__, then object.__setattr__ per
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


def best_over_lengths(
    node_at: Callable[[int], _Node],
    longest: int,
    own_len: int,
    limit_at: Callable[[int], int],
    draft: Callable[[_Node, int, int, bool], Draft | None],
    best: Draft,
) -> Draft:
    """The best draft over every match length in one trie: the matching policy.

    ``node_at(L)`` is the node of the context's last ``L`` tokens for every ``L`` in
    ``1..longest`` (all of them occur in the trie); ``limit_at(L)`` the draft limit of a match of
    ``L`` tokens (``draft_limit``: non-decreasing in ``L``); ``draft(node, L, limit, discount_self)``
    the draft read from ``node`` (None if it has no tokens), ``discount_self`` being ``L <=
    own_len`` (the request's own, current occurrence of the suffix is in the counts). ``best`` is
    the draft to beat (a fresh ``Draft()``, or the other trie's best); a candidate
    replaces it only if it scores strictly more.

    Lengths are tried from ``longest`` down, so among equal scores the longer match wins (and an
    earlier ``best`` beats this trie's equal scores). Two shortcuts leave the result as if every
    length had been drafted:

    * The search stops once ``limit_at(L)`` is at most the best score: a draft's score is a sum of
      probabilities, each at most 1, over at most ``limit`` tokens, and ``limit_at`` only shrinks as
      ``L`` does, so no shorter match can score more.
    * A length whose node has the same count as the next longer length's node is skipped: every
      occurrence of the shorter suffix is then an occurrence of the longer one, so both nodes have
      the same continuations with the same counts (the draft is far from the depth cut: ``L + 1 +
      limit <= max_depth``), and the shorter draft is at most the longer one's (its limit is at
      most as large) and cannot beat it. (Stamps could differ between the two subtrees only after a
      removal took away occurrences that a later increment of one of them came from: then the
      skipped length might have broken a tie differently. Skipping it is the policy all the same.)
      A node without children drafts nothing and is not drafted from.
    """
    above = -1  # the count of the node one length longer; -1 for the longest length
    for length in range(longest, 0, -1):
        limit = limit_at(length)
        if limit <= best.score:
            break
        node = node_at(length)
        count = node.count
        if count == above:
            continue
        above = count
        if not node.children:
            continue
        candidate = draft(node, length, limit, length <= own_len)
        if candidate is not None and candidate.score > best.score:
            best = candidate
    return best


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


def _ints(tokens: Any) -> list[int]:
    """Plain ints from a list slice or a numpy view (``TypeError`` for anything but integers)."""
    tolist = getattr(tokens, "tolist", None)
    return [index(t) for t in (tokens if tolist is None else tolist())]


def native_available() -> bool:
    """Whether the C++ backend (``arctic_runtime.suffix._native``) is built and importable."""
    return _NATIVE_CACHE is not None


class SuffixDecodingCache:
    """Per-request local tries and a global trie of the responses of active and recently finished
    requests; see the package docstring.

    Settings are ``SuffixConfig``'s fields as keywords, or a whole ``config`` (which then wins).
    Request ids are any hashable values; an id may be reused once its request has stopped. Not
    thread-safe: one engine loop owns a cache.

    ``backend``: "native" runs the whole cache in the C++ extension ``arctic_runtime.suffix._native``
    (one call per request per step, no Python objects per trie node; ``NativeBackendUnavailable``,
    an ``ImportError``, if it is not built); "python" on this module's ``SuffixTree``; "auto" (the
    default) picks native when it imports. ``self.backend`` says which one runs. Both give identical
    drafts, probabilities, scores and node counts. Native-only limits: token ids must fit in a signed
    32-bit int (``OverflowError`` otherwise) and be ints (``TypeError``); a call made while another
    one runs on the same cache (from Python code it runs, such as a token's ``__index__``, or from
    another thread) raises ``RuntimeError``.
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
            )
            self.backend = "native"
        # The Python backend's state (left empty with the native one). Every response in the global
        # tree is a sequence there under its own integer key, from its request's start on.
        self._local: dict[Hashable, SuffixTree] = {}
        self._global = SuffixTree(self.config.max_depth)
        self._live: dict[Hashable, int] = {}  # active req_id -> key of its response (global tree on)
        self._cached: OrderedDict[int, Hashable] = OrderedDict()  # finished: key -> req_id, oldest first
        self._cached_key: dict[Hashable, int] = {}  # req_id -> key of its latest cached response
        self._next_key = 0

    # ------------------------------------------------------------------------- request lifecycle

    @property
    def active_requests(self) -> frozenset[Hashable]:
        if self._native is not None:
            return self._native.active_requests()
        return frozenset(self._local)

    @property
    def num_active_requests(self) -> int:
        if self._native is not None:
            return self._native.num_active_requests()
        return len(self._local)

    @property
    def num_cached_responses(self) -> int:
        if self._native is not None:
            return self._native.num_cached_responses()
        return len(self._cached)

    def start_request(self, req_id: Hashable, prompt_ids: Iterable[int]) -> None:
        """Build the request's local trie from its prompt (and, with the global trie on, an empty
        live response there). ``ValueError`` if it is already active."""
        if self._native is not None:
            self._native.start_request(req_id, prompt_ids)
            return
        if req_id in self._local:
            raise ValueError(f"request {req_id!r} is already active")
        tree = SuffixTree(self.config.max_depth)
        tree.extend(req_id, prompt_ids)
        self._local[req_id] = tree
        if self.config.max_cached_requests > 0:
            key = self._next_key
            self._next_key += 1
            self._global.extend(key, ())
            self._live[req_id] = key

    def add_tokens(self, req_id: Hashable, token_ids: Sequence[int]) -> None:
        """Append generated tokens to the request's local trie and (global trie on) to its live
        response in the global trie, where every other request can match them from now on."""
        if self._native is not None:
            self._native.add_tokens(req_id, token_ids)
            return
        local = self._local[req_id]
        tokens = list(token_ids)
        local.extend(req_id, tokens)
        key = self._live.get(req_id)
        if key is not None:
            self._global.extend(key, tokens)

    def stop_request(self, req_id: Hashable, cache_response: bool = True) -> None:
        """Free the local trie. With ``cache_response`` a non-empty response stays in the global
        trie and joins the FIFO of finished responses (the oldest beyond ``max_cached_requests``
        are removed); without it (an abort) the response is removed from the global trie."""
        if self._native is not None:
            self._native.stop_request(req_id, cache_response)
            return
        del self._local[req_id]
        key = self._live.pop(req_id, None)
        if key is None:  # the global trie is off
            return
        if not cache_response or not self._global.tokens(key):
            self._global.remove(key)
            return
        self._cached[key] = req_id
        self._cached_key[req_id] = key
        while len(self._cached) > self.config.max_cached_requests:
            self._drop_cached(*self._cached.popitem(last=False))

    def evict_response(self, req_id: Hashable) -> bool:
        """Remove the latest finished response that request ``req_id`` left in the global trie, if
        it is still held (e.g. the partial response of a preempted request that is about to resume).
        Returns whether one was removed; an id with no cached response is not an error. The live
        response of an active request of that id is not touched."""
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

    def _search(self, req_id: Hashable, max_spec_tokens: int | None) -> Draft:
        """``best_over_lengths`` in the local trie, then in the global trie with the local best as
        the draft to beat (so ties go to local)."""
        cfg = self.config
        cap = cfg.max_spec_tokens if max_spec_tokens is None else min(max_spec_tokens, cfg.max_spec_tokens)
        factor, offset, min_prob = cfg.max_spec_factor, cfg.max_spec_offset, cfg.min_token_prob

        def limit_at(length: int) -> int:
            return draft_limit(length, cap, factor, offset)

        def drafter(source: Source) -> Callable[[_Node, int, int, bool], Draft | None]:
            def draft(node: _Node, length: int, limit: int, discount: bool) -> Draft | None:
                tokens, probs = speculate_path(node, limit, min_prob, discount_self=discount)
                return Draft(tokens, probs, sum(probs), length, source) if tokens else None

            return draft

        local = self._local[req_id]
        active = local.active_nodes(req_id)
        longest = min(len(active) - 1, cfg.max_match_len)  # max_match_len <= max_depth - 1
        best = best_over_lengths(active.__getitem__, longest, longest, limit_at, drafter("local"), Draft())
        key = self._live.get(req_id)
        if key is None or self._global.root.count == 0:
            return best
        # The live response's active nodes are the nodes of the context's suffixes that lie within
        # it; longer suffixes (into the prompt) are walked from the root.
        context = local.tokens(req_id)
        n = len(context)
        own = self._global.active_nodes(key)
        own_len = len(self._global.tokens(key))
        longest = min(n, cfg.max_match_len)
        if own_len < longest:
            longest = self._global.match(context, longest, require_continuation=False)[1]

        def node_at(length: int) -> _Node:
            if length <= own_len:
                return own[length]
            node = self._global.walk(context, n - length)
            assert node is not None  # every length up to the longest occurring one occurs
            return node

        return best_over_lengths(node_at, longest, own_len, limit_at, drafter("global"), best)

    def speculate(self, req_id: Hashable, max_spec_tokens: int | None = None) -> Draft:
        """The best greedy draft over every match length of the local and the global trie (ties:
        within a trie the longer match, between the tries local; see the package docstring).

        ``max_spec_tokens`` lowers the configured cap for this call (e.g. the room left before the
        model's maximum length).
        """
        if self._native is not None:
            return self._native.speculate(req_id, max_spec_tokens)
        return self._search(req_id, max_spec_tokens)

    def sync_and_draft(
        self,
        req_ids: Sequence[Hashable],
        token_rows: Any,
        num_tokens: Any,
        num_prompt_tokens: Any,
        sampled: Sequence[Any],
        max_spec_tokens: int | None,
        max_model_len: int,
    ) -> list[list[int]]:
        """An engine step over its whole batch, given the way vLLM's ``InputBatch`` holds it:
        parallel per-row tables, ``token_rows[i][:num_tokens[i]]`` row i's prompt + output so far
        (numpy arrays are read in place by the native backend; nested sequences work too),
        ``num_prompt_tokens[i]`` its prompt length, ``sampled[i]`` truthy when the step produced a
        token for it. For each row in order: not sampled (a prompt still being prefilled), no draft
        and nothing else; a request not active is started from its prompt (after
        ``evict_response``: a preempted request that comes back is never counted twice); the
        tokens beyond what its tries hold are added; then the token ids of ``speculate(req_id,
        room)`` with ``room = min(max_spec_tokens, max_model_len - 1 - num_tokens[i])`` (none when
        room <= 0: a draft never runs past the model's length). Requests are never stopped here.

        Every row is read and checked before anything changes: tables with fewer rows than
        ``req_ids`` or a request id on two sampled rows raise ``ValueError`` (naming the field), a
        non-integer count or token ``TypeError``, with nothing applied.
        """
        if self._native is not None:
            return self._native.sync_and_draft(
                req_ids, token_rows, num_tokens, num_prompt_tokens, sampled, max_spec_tokens, max_model_len
            )
        cap = (
            self.config.max_spec_tokens
            if max_spec_tokens is None
            else min(index(max_spec_tokens), self.config.max_spec_tokens)
        )
        max_len = index(max_model_len)
        ids = list(req_ids)
        n = len(ids)
        for name, table in (
            ("token_rows", token_rows),
            ("num_tokens", num_tokens),
            ("num_prompt_tokens", num_prompt_tokens),
            ("sampled", sampled),
        ):
            if len(table) < n:
                raise ValueError(
                    f"{name}: {len(table)} rows for {n} request ids (one row per request id needed)"
                )
        # Read and check every row first, so that bad input raises with nothing applied.
        plan: list[tuple[Hashable, list[int] | None, list[int], int] | None] = []
        seen: dict[Hashable, int] = {}
        for i, req_id in enumerate(ids):
            if not sampled[i]:
                plan.append(None)
                continue
            count = index(num_tokens[i])
            active = req_id in self._local
            if req_id in seen:
                raise ValueError(
                    f"req_ids: request {req_id!r} appears in rows {seen[req_id]} and {i} (each request once "
                    "per step)"
                )
            seen[req_id] = i
            row = token_rows[i]
            prompt = None if active else _ints(row[: max(index(num_prompt_tokens[i]), 0)])
            have = len(self._local[req_id].tokens(req_id)) if prompt is None else len(prompt)
            extra = _ints(row[have:count]) if count > have else []
            plan.append((req_id, prompt, extra, min(cap, max_len - 1 - count)))
        drafts: list[list[int]] = []
        for entry in plan:
            if entry is None:
                drafts.append([])
                continue
            req_id, prompt, extra, room = entry
            if prompt is not None:
                self.evict_response(req_id)
                self.start_request(req_id, prompt)
            if extra:
                self.add_tokens(req_id, extra)
            drafts.append(self.speculate(req_id, room).token_ids if room > 0 else [])
        return drafts

    # ------------------------------------------------------------------------- accounting

    def memory_estimate(self) -> dict[str, int]:
        """Node counts and sizes. Node counts are the reference trie's on both backends (local tries
        summed; ``cached_tokens`` counts every token in the global trie, live responses included);
        ``estimated_bytes = nodes * bytes_per_node``; ``allocated_bytes`` is what the backend really
        holds.

        Python backend: ``bytes_per_node`` is ``BYTES_PER_NODE`` (280: one node object of three slots
        plus a one-child dict on CPython 3.11, measured; token lists and Python's own overheads are
        left out) and ``allocated_bytes`` equals the estimate. Native backend: ``bytes_per_node`` is
        the node record (20 bytes); ``allocated_bytes`` counts every allocation of the native cache
        (record chunks with their growth room and free records, hash tables, the global trie's
        sibling and suffix links, tail entries, stored tokens with their stamps, active-node lists).
        Unique paths are stored as tails (one record each), so ``allocated_bytes`` is usually well
        below the estimate.
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
