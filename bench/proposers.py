"""Draft proposers used only to measure verification cost (vLLM's ``custom_class`` method).

``FixedLengthProposer`` drafts exactly ``num_speculative_tokens`` tokens for every decoding request
in every step. With vLLM's synthetic rejection sampling at acceptance 0 (``rejection_sample_method=
"synthetic"``, ``synthetic_acceptance_rates=[0, ...]``) every step then verifies k drafts per request
and emits one token per request, so time per output token *is* the cost of a verification step with
k drafts at that batch size. The draft content does not matter: acceptance is forced.
"""

from __future__ import annotations

from typing import Any


class FixedLengthProposer:
    def __init__(self, vllm_config: Any) -> None:
        self.k = int(vllm_config.speculative_config.num_speculative_tokens)

    def load_model(self, *args: Any, **kwargs: Any) -> None:
        """Nothing to load (vLLM's CPU model runner calls this on every drafter)."""

    def propose(self, sampled_token_ids: list[list[int]], *args: Any, **kwargs: Any) -> list[list[int]]:
        return [[ids[-1]] * self.k if ids else [] for ids in sampled_token_ids]
