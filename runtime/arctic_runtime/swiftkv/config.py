"""The ``llama_swiftkv`` config class (module level, so configs pickle into vLLM's workers)."""

from __future__ import annotations

from typing import Any

from transformers import LlamaConfig

from arctic_runtime.swiftkv import MODEL_TYPE


class LlamaSwiftKVConfig(LlamaConfig):  # type: ignore[misc]
    """Llama config plus ``num_key_value_layers`` (L_kv: layers from L_kv on use SwiftKV)."""

    model_type = MODEL_TYPE

    def __init__(self, num_key_value_layers: int | None = None, **kwargs: Any) -> None:
        self.num_key_value_layers = num_key_value_layers
        super().__init__(**kwargs)
