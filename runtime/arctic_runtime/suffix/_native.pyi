"""Types of the C++ backend (``_native.cpp``); use ``SuffixDecodingCache(backend=...)``, not this."""

from collections.abc import Hashable, Iterable, Sequence
from typing import Any

from arctic_runtime.suffix.tree import Draft, TreeDraft

BYTES_PER_NODE: int
SCAN_LIMIT: int

class Cache:
    def __init__(
        self,
        max_depth: int,
        max_spec_tokens: int,
        max_spec_factor: float,
        max_spec_offset: float,
        min_token_prob: float,
        max_cached_requests: int,
        draft_type: type[Draft],
        tree_draft_type: type[TreeDraft],
    ) -> None: ...
    def start_request(self, req_id: Hashable, prompt_ids: Iterable[int], /) -> None: ...
    def add_tokens(self, req_id: Hashable, token_ids: Sequence[int], /) -> None: ...
    def add_tokens_batch(self, updates: Iterable[tuple[Hashable, Sequence[int]]], /) -> None: ...
    def stop_request(self, req_id: Hashable, cache_response: bool = True, /) -> None: ...
    def evict_response(self, req_id: Hashable, /) -> bool: ...
    def speculate(self, req_id: Hashable, max_spec_tokens: int | None = None, /) -> Draft: ...
    def speculate_batch(
        self, req_ids: Iterable[Hashable], max_spec_tokens: int | None = None, /
    ) -> list[Draft]: ...
    def add_tokens_and_speculate(
        self, updates: Iterable[tuple[Hashable, Sequence[int]]], max_spec_tokens: int | None = None, /
    ) -> list[Draft]: ...
    def sync_and_draft(
        self,
        req_ids: Sequence[Hashable],
        token_rows: Any,
        num_tokens: Any,
        num_prompt_tokens: Any,
        sampled: Sequence[Any],
        max_spec_tokens: int | None,
        max_model_len: int,
        /,
    ) -> list[list[int]]: ...
    def num_active_requests(self) -> int: ...
    def speculate_tree(
        self, req_id: Hashable, max_spec_tokens: int | None = None, max_nodes: int | None = None, /
    ) -> TreeDraft: ...
    def tokens(self, req_id: Hashable, /) -> list[int]: ...
    def active_requests(self) -> frozenset[Hashable]: ...
    def num_cached_responses(self) -> int: ...
    def memory(self) -> tuple[int, int, int, int, int, int, int]: ...
    def _advance_stamp_clock(self, value: int, /) -> None:
        """Tests only: move every trie's recency clock on to ``value`` (never back), so that the
        renumbering of 32-bit stamps runs soon."""
