"""Suffix decoding inside an engine loop: settings from vLLM's keys, and a drafter kept in step with
the engine's batch. No vLLM import: the vLLM adapter (``arctic_runtime.hooks``) hands in plain rows.

Settings. vLLM's ``speculative_config`` keys map onto ``SuffixConfig`` as follows (``suffix_config``):

* ``suffix_decoding_max_tree_depth`` (vLLM default 24) -> ``max_depth``: the trie holds match plus
  draft, exactly as vLLM documents the key ("limits the sum of the prefix match and speculation
  lengths");
* ``num_speculative_tokens`` -> ``max_spec_tokens``. It must be below the tree depth (the match needs
  at least one token). When it is not given, vLLM would default it to the tree depth, which would
  leave no room to match; we default it to ``min(16, max_tree_depth // 2)`` instead;
* ``suffix_decoding_max_spec_factor`` -> ``max_spec_factor``; ``suffix_decoding_min_token_prob`` ->
  ``min_token_prob``; ``suffix_decoding_max_cached_requests`` -> ``max_cached_requests``;
  ``max_spec_offset`` keeps its default (0).

A value out of range raises ``InvalidSetting`` naming the vLLM field (``speculative_config.<key>``).

Keeping the cache in step (``SuffixDrafter.propose``, once per engine step, for every request in the
batch in batch order):

* A request the drafter has not seen starts with its prompt, then everything generated so far is
  added: a request resumed after preemption keeps its whole history (vLLM's own proposer restarts
  from the prompt alone).
* Afterwards only the tokens beyond what was already added are appended (``num_tokens`` grows by the
  accepted drafts plus one each step), so the trie always equals prompt + output.
* Rows still prefilling (no token sampled this step) draft nothing and are not started yet.
* Requests that left the batch are stopped: their local trie is freed and their response joins the
  global trie (FIFO-bounded by ``max_cached_requests``). A request id seen again later starts over,
  and the partial response it left in the global trie is evicted first, so a preempted request is
  never counted twice.
* When drafting is off for the step (the live speculation cap) the tries are still updated and
  nothing is drafted. A draft never runs past the model's maximum length.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from arctic_runtime.contract import FieldError, InvalidSetting, default_suffix_spec_tokens
from arctic_runtime.suffix.tree import BackendChoice, SuffixConfig, SuffixConfigError, SuffixDecodingCache

#: vLLM's key for each SuffixConfig field it sets.
VLLM_KEYS = {
    "max_depth": "suffix_decoding_max_tree_depth",
    "max_spec_tokens": "num_speculative_tokens",
    "max_spec_factor": "suffix_decoding_max_spec_factor",
    "min_token_prob": "suffix_decoding_min_token_prob",
    "max_cached_requests": "suffix_decoding_max_cached_requests",
}


def suffix_config(values: Mapping[str, Any]) -> SuffixConfig:
    """``SuffixConfig`` from vLLM's speculative-config keys (``VLLM_KEYS``); missing keys take vLLM's
    defaults (tree depth 24, 10000 cached requests, factor 1.0, min prob 0.1) and ours for the draft
    cap. Raises ``InvalidSetting`` naming ``speculative_config.<key>``."""
    depth = values.get("suffix_decoding_max_tree_depth", 24)
    spec = values.get("num_speculative_tokens")
    kwargs = {
        "max_depth": depth,
        "max_spec_tokens": default_suffix_spec_tokens(depth)
        if spec is None and isinstance(depth, int)
        else spec,
        "max_spec_factor": values.get("suffix_decoding_max_spec_factor", 1.0),
        "min_token_prob": values.get("suffix_decoding_min_token_prob", 0.1),
        "max_cached_requests": values.get("suffix_decoding_max_cached_requests", 10000),
    }
    try:
        return SuffixConfig(**kwargs)
    except SuffixConfigError as exc:
        key = VLLM_KEYS.get(exc.field, exc.field)
        message = exc.message
        if exc.field == "max_spec_tokens":
            message = (
                f"must be an integer in 1..suffix_decoding_max_tree_depth - 1 (= {depth - 1}) for "
                f"suffix decoding (the tree holds the match and the draft), got {spec!r}"
            )
        raise InvalidSetting([FieldError(f"speculative_config.{key}", message)]) from exc


def suffix_config_of(vllm_speculative_config: Any) -> SuffixConfig:
    """``suffix_config`` read from the attributes of vLLM's ``SpeculativeConfig`` (``VLLM_KEYS``)."""
    return suffix_config({key: getattr(vllm_speculative_config, key) for key in VLLM_KEYS.values()})


@dataclass(frozen=True)
class BatchRow:
    """One request of the engine's batch this step, for ``SuffixDrafter.step``.

    ``token_ids``: prompt + output so far (including the tokens sampled this step); ``sampled``:
    whether the step produced a token for it (False while its prompt is still being prefilled in
    chunks).
    """

    req_id: Hashable
    token_ids: Sequence[int]
    num_prompt_tokens: int
    sampled: bool


class SuffixDrafter:
    """A ``SuffixDecodingCache`` kept in step with an engine's batch (see the module docstring)."""

    def __init__(self, config: SuffixConfig, max_model_len: int, backend: BackendChoice = "auto") -> None:
        self.config = config
        self.max_model_len = max_model_len
        self.cache = SuffixDecodingCache(config=config, backend=backend)
        self.steps = 0
        self.drafted_tokens = 0
        self.step_ns = 0  # wall time inside propose(), summed: the drafter's cost in the engine loop
        self.rows = 0

    @property
    def active_requests(self) -> frozenset[Hashable]:
        return self.cache.active_requests

    def propose(
        self,
        req_ids: Sequence[Hashable],
        token_ids: Sequence[Sequence[int]],
        num_tokens: Sequence[int],
        num_prompt_tokens: Sequence[int],
        sampled: Sequence[Any],
        num_speculative_tokens: int,
        drafting: bool,
    ) -> list[list[int]]:
        """Update every request's tries and return one draft per row (empty where none).

        The batch comes as parallel per-row sequences, the way vLLM's ``InputBatch`` holds it:
        ``token_ids[i][:num_tokens[i]]`` is row i's prompt + output (a row of a numpy buffer is
        fine: only the new tokens are copied), ``num_prompt_tokens[i]`` its prompt length, and
        ``sampled[i]`` is truthy when the step produced a token for it. The whole batch goes to the
        cache in one call (``SuffixDecodingCache.sync_and_draft``: the native backend reads numpy
        buffers in place, no Python object per row but the drafts).
        """
        started = time.perf_counter_ns()
        cache = self.cache
        drafts = cache.sync_and_draft(
            req_ids,
            token_ids,
            num_tokens,
            num_prompt_tokens,
            sampled,
            num_speculative_tokens if drafting else 0,
            self.max_model_len,
        )
        if cache.num_active_requests > sum(map(bool, sampled)):
            # Every sampled row's request is active now; more active ones: some may have left the
            # batch (or sit in it unsampled): stop those that left, which frees their local trie.
            present = set(req_ids)
            for req_id in [r for r in cache.active_requests if r not in present]:
                cache.stop_request(req_id)
        self.steps += 1
        self.rows += len(req_ids)
        self.drafted_tokens += sum(map(len, drafts))
        self.step_ns += time.perf_counter_ns() - started
        return drafts

    def step(self, rows: Sequence[BatchRow], num_speculative_tokens: int, drafting: bool) -> list[list[int]]:
        """``propose`` for a list of ``BatchRow`` (tests and simple callers)."""
        return self.propose(
            [r.req_id for r in rows],
            [r.token_ids for r in rows],
            [len(r.token_ids) for r in rows],
            [r.num_prompt_tokens for r in rows],
            [r.sampled for r in rows],
            num_speculative_tokens,
            drafting,
        )

    def state(self) -> dict[str, Any]:
        """What the worker reports about its suffix cache (for the admin API and tests)."""
        return {
            "backend": self.cache.backend,
            "active_requests": self.cache.num_active_requests,
            "cached_responses": self.cache.num_cached_responses,
            "steps": self.steps,
            "drafted_tokens": self.drafted_tokens,
            "rows": self.rows,
            "step_us_total": self.step_ns / 1000,
            "us_per_step": self.step_ns / 1000 / max(1, self.steps),
            "memory": self.cache.memory_estimate(),
            "config": {
                "max_depth": self.config.max_depth,
                "max_spec_tokens": self.config.max_spec_tokens,
                "max_spec_factor": self.config.max_spec_factor,
                "min_token_prob": self.config.min_token_prob,
                "max_cached_requests": self.config.max_cached_requests,
            },
        }
