"""Types of the C++ backend (``native/bindings.cpp``); use ``SuffixDecodingCache(backend=...)``, not this."""

from collections.abc import Hashable, Iterable
from typing import Any

from arctic_runtime.suffix.tree import Draft

BYTES_PER_NODE: int

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
    ) -> None: ...
    def start_request(self, req_id: Hashable, prompt_ids: Iterable[int]) -> None: ...
    def add_tokens(self, req_id: Hashable, token_ids: Iterable[int]) -> None: ...
    def stop_request(self, req_id: Hashable, cache_response: bool = True) -> None: ...
    def evict_response(self, req_id: Hashable) -> bool: ...
    def speculate(self, req_id: Hashable, max_spec_tokens: int | None = None) -> Draft: ...
    def sync_and_draft(
        self,
        req_ids: Iterable[Hashable],
        token_rows: Any,
        num_tokens: Any,
        num_prompt_tokens: Any,
        sampled: Iterable[Any],
        max_spec_tokens: int | None,
        max_model_len: int,
    ) -> list[list[int]]: ...
    def num_active_requests(self) -> int: ...
    def active_requests(self) -> frozenset[Hashable]: ...
    def num_cached_responses(self) -> int: ...
    def memory(self) -> tuple[int, int, int, int, int, int, int]: ...
    def _tokens(self, req_id: Hashable) -> list[int]:
        """Tests only: the request's tokens in its local trie."""
    def _advance_stamp_clock(self, value: int) -> None:
        """Tests only: move every trie's recency clock on to ``value`` (never back), so that the
        renumbering of 32-bit stamps runs soon."""
