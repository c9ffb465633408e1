"""``LlamaSwiftKVForCausalLM`` for vLLM 0.26: vLLM's Llama with SingleInputKV from layer L_kv on.

Layers < L_kv are vLLM's own ``LlamaDecoderLayer``. At L_kv the residual stream is RMS-normed once
(``norm_swiftkv``); every later layer takes its K and V from that one input (``kv_proj_swiftkv``,
packed from the checkpoint's ``k_proj_swiftkv`` / ``v_proj_swiftkv``, RoPE on K) and its Q from its
own input (``q_proj_swiftkv``); vLLM's ``Attention`` writes the paged cache and attends as for any
layer, so decode, CUDA graphs, prefix caching, chunked prefill and speculation see an ordinary
decoder. The later layers' original ``q/k/v_proj`` are neither allocated nor loaded.

What this version does not do yet: skip the later layers' Q, O and MLP work for prompt tokens whose
logits nobody reads (the prefill saving SwiftKV is for). It computes SwiftKV's function exactly, for
every token, so quality and composition can be tested now; see docs/swiftkv.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice
from typing import Any

import torch
from torch import nn
from vllm.compilation.decorators import support_torch_compile
from vllm.config import VllmConfig
from vllm.distributed import get_pp_group
from vllm.model_executor.layers.layernorm import RMSNorm
from vllm.model_executor.layers.linear import ColumnParallelLinear, MergedColumnParallelLinear
from vllm.model_executor.layers.vocab_parallel_embedding import VocabParallelEmbedding
from vllm.model_executor.models.llama import LlamaAttention, LlamaDecoderLayer, LlamaForCausalLM, LlamaModel
from vllm.model_executor.models.utils import (
    AutoWeightsLoader,
    extract_layer_index,
    make_empty_intermediate_tensors_factory,
    make_layers,
)
from vllm.sequence import IntermediateTensors

from arctic_runtime.swiftkv import num_kv_layers


class SwiftKVAttention(LlamaAttention):  # type: ignore[misc]
    """Q from the layer's input, K/V from the shared SwiftKV input."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        prefix, quant = kwargs["prefix"], kwargs.get("quant_config")
        del self.qkv_proj  # the later layers' own q/k/v_proj are unused under SwiftKV
        hidden = kwargs["hidden_size"]
        self.q_proj_swiftkv = ColumnParallelLinear(
            hidden,
            self.total_num_heads * self.head_dim,
            bias=False,
            quant_config=quant,
            prefix=f"{prefix}.q_proj_swiftkv",
        )
        kv = self.total_num_kv_heads * self.head_dim
        self.kv_proj_swiftkv = MergedColumnParallelLinear(
            hidden, [kv, kv], bias=False, quant_config=quant, prefix=f"{prefix}.kv_proj_swiftkv"
        )

    def forward(
        self, positions: torch.Tensor, hidden_states: torch.Tensor, swift_in: torch.Tensor
    ) -> torch.Tensor:  # type: ignore[override]
        q, _ = self.q_proj_swiftkv(hidden_states)
        kv, _ = self.kv_proj_swiftkv(swift_in)
        k, v = kv.split([self.kv_size, self.kv_size], dim=-1)
        q, k = self.rotary_emb(positions, q, k)
        out, _ = self.o_proj(self.attn(q, k, v))
        return out  # type: ignore[no-any-return]


class SwiftKVDecoderLayer(LlamaDecoderLayer):  # type: ignore[misc]
    def __init__(self, vllm_config: VllmConfig, prefix: str = "", config: Any = None) -> None:
        super().__init__(
            vllm_config=vllm_config, prefix=prefix, config=config, attn_layer_type=SwiftKVAttention
        )

    def forward(  # type: ignore[override]
        self,
        positions: torch.Tensor,
        hidden_states: torch.Tensor,
        residual: torch.Tensor,
        swift_in: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden_states, residual = self.input_layernorm(hidden_states, residual)
        hidden_states = self.self_attn(positions=positions, hidden_states=hidden_states, swift_in=swift_in)
        hidden_states, residual = self.post_attention_layernorm(hidden_states, residual)
        return self.mlp(hidden_states), residual


def _layer_factory(vllm_config: VllmConfig, lkv: int) -> Any:
    def make(prefix: str = "", vllm_config: VllmConfig = vllm_config) -> nn.Module:
        if extract_layer_index(prefix) >= lkv:
            return SwiftKVDecoderLayer(vllm_config=vllm_config, prefix=prefix)
        return LlamaDecoderLayer(vllm_config=vllm_config, prefix=prefix)

    return make


@support_torch_compile(
    dynamic_arg_dims={
        "input_ids": {0: "b"},
        "positions": {0: "b"},
        "intermediate_tensors": {0: "b"},
        "inputs_embeds": {0: "b"},
    }
)
class LlamaSwiftKVModel(nn.Module):
    """vLLM's LlamaModel pieces (embedding, layers, norm) plus ``norm_swiftkv``; no pipeline parallelism."""

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        config = vllm_config.model_config.hf_config
        self.config = config
        self.num_kv_layers = num_kv_layers(config)
        if get_pp_group().world_size > 1:
            raise ValueError(
                "SwiftKV: pipeline parallelism is not supported (pipeline_parallel_size must be 1)"
            )
        self.vocab_size = config.vocab_size
        self.embed_tokens = VocabParallelEmbedding(
            config.vocab_size, config.hidden_size, quant_config=vllm_config.quant_config
        )
        self.start_layer, self.end_layer, self.layers = make_layers(
            config.num_hidden_layers,
            _layer_factory(vllm_config, self.num_kv_layers),
            prefix=f"{prefix}.layers",
        )
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        if self.num_kv_layers < config.num_hidden_layers:
            self.norm_swiftkv = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.make_empty_intermediate_tensors = make_empty_intermediate_tensors_factory(
            ["hidden_states", "residual"], config.hidden_size
        )

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(input_ids)  # type: ignore[no-any-return]

    def forward(  # type: ignore[override]
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        hidden = inputs_embeds if inputs_embeds is not None else self.embed_input_ids(input_ids)
        residual: torch.Tensor | None = None
        for layer in islice(self.layers, 0, self.num_kv_layers):
            hidden, residual = layer(positions, hidden, residual)
        stream = hidden if residual is None else hidden + residual
        if self.num_kv_layers == len(self.layers):
            return self.norm(stream)  # type: ignore[no-any-return]
        swift_in = self.norm_swiftkv(stream)
        hidden, residual = stream, None
        for layer in islice(self.layers, self.num_kv_layers, None):
            if residual is None:  # first SwiftKV layer: the stream is the residual, nothing added
                residual = hidden
                hidden = torch.zeros_like(hidden)
            hidden, residual = layer(positions, hidden, residual, swift_in)
        hidden, _ = self.norm(hidden, residual)
        return hidden  # type: ignore[no-any-return]

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        params = dict(self.named_parameters())
        loaded: set[str] = set()
        rest: list[tuple[str, torch.Tensor]] = []
        for name, tensor in weights:
            if "_swiftkv" in name:
                if ".k_proj_swiftkv" in name or ".v_proj_swiftkv" in name:
                    target = name.replace(".k_proj_swiftkv", ".kv_proj_swiftkv").replace(
                        ".v_proj_swiftkv", ".kv_proj_swiftkv"
                    )
                    shard = 0 if ".k_proj_swiftkv" in name else 1
                    param = params[target]
                    param.weight_loader(param, tensor, shard)
                else:
                    target = name
                    param = params[target]
                    getattr(param, "weight_loader", _default_loader)(param, tensor)
                loaded.add(target)
                continue
            if self._unused(name):
                continue
            rest.append((name, tensor))
        loaded |= AutoWeightsLoader(self).load_weights(rest, mapper=LlamaModel.hf_to_vllm_mapper)
        return loaded

    def _unused(self, name: str) -> bool:
        """The original q/k/v_proj of SwiftKV layers (kept in checkpoints, not needed to serve)."""
        if not any(f".self_attn.{p}." in name for p in ("q_proj", "k_proj", "v_proj")):
            return False
        return extract_layer_index(name) >= self.num_kv_layers


def _default_loader(param: torch.Tensor, tensor: torch.Tensor) -> None:
    param.data.copy_(tensor)


class LlamaSwiftKVForCausalLM(LlamaForCausalLM):  # type: ignore[misc]
    """The SwiftKV checkpoint architecture name; weights load under the published names."""

    packed_modules_mapping = {
        "qkv_proj": ["q_proj", "k_proj", "v_proj"],
        "gate_up_proj": ["gate_proj", "up_proj"],
        "kv_proj_swiftkv": ["k_proj_swiftkv", "v_proj_swiftkv"],
    }

    def _init_model(self, vllm_config: VllmConfig, prefix: str = "", layer_type: Any = None) -> nn.Module:
        return LlamaSwiftKVModel(vllm_config=vllm_config, prefix=prefix)

    def forward(  # type: ignore[override]
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.model(input_ids, positions, intermediate_tensors, inputs_embeds)  # type: ignore[no-any-return]
