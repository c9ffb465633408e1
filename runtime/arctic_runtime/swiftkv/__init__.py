"""SwiftKV checkpoints in vLLM 0.26: config, checks and registration (the model is in ``model``).

A SwiftKV checkpoint is a Llama whose ``config.json`` says ``"model_type": "llama_swiftkv"``,
``"architectures": ["LlamaSwiftKVForCausalLM"]`` and ``"num_key_value_layers": L_kv``, and whose
layers ``>= L_kv`` carry ``q_proj_swiftkv`` / ``k_proj_swiftkv`` / ``v_proj_swiftkv`` weights, plus one
``model.norm_swiftkv`` (Snowflake's published checkpoints and our ``arctic_runtime.train.swiftkv``
export). Registering is public vLLM / transformers API (``ModelRegistry.register_model``,
``AutoConfig.register``), not a patch: it runs in every process the plugin is enabled in.
"""

from __future__ import annotations

from typing import Any

MODEL_TYPE = "llama_swiftkv"
ARCHITECTURE = "LlamaSwiftKVForCausalLM"


class SwiftKVConfigError(ValueError):
    """A SwiftKV setting or checkpoint that cannot be served; the message names the setting."""


def num_kv_layers(config: Any) -> int:
    """L_kv of a SwiftKV config, checked against the layer count (one-line error otherwise)."""
    layers = int(config.num_hidden_layers)
    value = getattr(config, "num_key_value_layers", None)
    if value is None:
        raise SwiftKVConfigError(
            f"num_key_value_layers: missing from the {MODEL_TYPE} config (set it to 1..{layers})"
        )
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= layers:
        raise SwiftKVConfigError(
            f"num_key_value_layers: must be an integer in 1..{layers} (num_hidden_layers), got {value!r}"
        )
    return value


def check_model(hf_config: Any, enabled: bool) -> None:
    """At engine start: SwiftKV requested for a non-SwiftKV model, or a bad L_kv, is one line."""
    is_swiftkv = getattr(hf_config, "model_type", None) == MODEL_TYPE
    if enabled and not is_swiftkv:
        raise SwiftKVConfigError(
            "additional_config.arctic.swiftkv.enabled: the model is not a SwiftKV checkpoint (its config "
            f"has model_type {getattr(hf_config, 'model_type', None)!r}, SwiftKV needs {MODEL_TYPE!r} with "
            "num_key_value_layers); serve a SwiftKV checkpoint or turn SwiftKV off"
        )
    if is_swiftkv:
        num_kv_layers(hf_config)


def register() -> None:
    """Make ``llama_swiftkv`` configs and ``LlamaSwiftKVForCausalLM`` known in this process."""
    from transformers import AutoConfig
    from vllm import ModelRegistry

    from arctic_runtime.swiftkv.config import LlamaSwiftKVConfig

    AutoConfig.register(MODEL_TYPE, LlamaSwiftKVConfig, exist_ok=True)
    ModelRegistry.register_model(ARCHITECTURE, "arctic_runtime.swiftkv.model:LlamaSwiftKVForCausalLM")
