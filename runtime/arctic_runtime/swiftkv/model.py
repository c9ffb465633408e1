"""``LlamaSwiftKVForCausalLM`` for vLLM 0.26: vLLM's Llama with SingleInputKV from layer L_kv on.

Layers < L_kv are vLLM's own ``LlamaDecoderLayer``. At L_kv the residual stream is RMS-normed once
(``norm_swiftkv``) and one matmul (``kv_proj_swiftkv``, packed at load from every later layer's
published ``k_proj_swiftkv`` / ``v_proj_swiftkv``) gives all later layers' K and V; each later layer
takes its Q from its own input (``q_proj_swiftkv``) and its K/V columns of that output, and vLLM's
``Attention`` writes the paged cache and attends as for any layer, so decode, CUDA graphs, prefix
caching, chunked prefill and speculation see an ordinary decoder. The later layers' original
``q/k/v_proj`` are neither allocated nor loaded.

The prefill saving: in a step where some request has more query rows than 1 + draft tokens (a
prompt chunk), ``forward_saving`` runs instead of the compiled model: layers < L_kv over every token;
the later layers' K/V for every token, RoPE on all of their keys in one call and every later
layer's cache written in one launch (``arctic_kernels.swiftkv_cache`` on CUDA; vLLM's per-layer
write elsewhere); then their Q, attention, O and MLP only for each request's last 1 + k rows (the
rows vLLM reads logits from), attention from those rows only against the cached sequences
(``arctic_runtime.swiftkv.rows``: metadata rebuilt for FlashAttention and vLLM's CPU backend; other
backends attend from every row with the other queries zero). That path is not compiled and not
graphed (its row count changes with the batch), so it calls each of vLLM's custom ops' own fused
kernels directly (``DirectKernels``: under torch.compile vLLM dispatches them to their PyTorch-native
forms for inductor to fuse, which eagerly are several unfused kernels each); decode and verify steps
run the compiled model with CUDA graphs as usual.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any, ClassVar

import torch
from torch import nn
from vllm import ir
from vllm.compilation.decorators import support_torch_compile
from vllm.config import VllmConfig
from vllm.distributed import get_pp_group, get_tensor_model_parallel_world_size
from vllm.ir.op import enable_torch_wrap
from vllm.model_executor.custom_op import CustomOp
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
from vllm.platforms import current_platform
from vllm.sequence import IntermediateTensors

from arctic_runtime.contract import DEFAULT_SWIFTKV_MIN_SAVING_TOKENS, parse_engine_settings
from arctic_runtime.swiftkv import num_kv_layers
from arctic_runtime.swiftkv.rows import Rows, RowsAttention, pick_rows, write_layers

#: vLLM IR ops in the Llama layers (RMSNorm) and their compiled-C provider.
_IR_OPS = ("rms_norm", "fused_add_rms_norm")
_IR_KERNEL = "vllm_c"


def platform_forward(op: Any) -> Any:
    """The method vLLM's ``CustomOp.dispatch_forward`` picks for this platform when the op is enabled
    (its own fused kernel), whatever the compilation config chose."""
    if current_platform.is_rocm():
        return op.forward_hip
    if current_platform.is_cpu():
        return op.forward_cpu
    if current_platform.is_xpu():
        return op.forward_xpu
    if current_platform.is_cuda():
        return op.forward_cuda
    return op.forward_native


class DirectKernels:
    """Eager calls of vLLM's custom ops run their fused kernels while ``active()``.

    With torch.compile (inductor), vLLM disables its custom ops: each dispatches to its PyTorch-native
    form and the IR ops (RMSNorm) to "native", for inductor to fuse inside the compiled graph. Called
    eagerly, as in SwiftKV's saving path, each is then several unfused kernels over the whole batch
    (RMSNorm: cast, square, mean, rsqrt, two multiplies, cast, residual add). Inside ``active()`` every
    ``CustomOp`` of the module calls its platform method (``forward_cuda`` on CUDA, as in vLLM's own
    eager mode), the IR ops prefer their C kernel where it is supported, and the torch custom-op wrapper
    around IR ops is skipped. Everything is restored on exit, so the compiled path is untouched.
    """

    def __init__(self, root: nn.Module) -> None:
        ops = [op for op in root.modules() if isinstance(op, CustomOp)]
        self._swaps = [(op, op._forward_method, platform_forward(op)) for op in ops]
        self._priorities = []
        for name in _IR_OPS:
            op = getattr(ir.ops, name)
            kernels = [_IR_KERNEL] if _IR_KERNEL in op.supported_providers() else []
            self._priorities.append((op, [*kernels, "native"]))

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for op, priority in self._priorities:
                stack.enter_context(op.set_priority(priority))
            stack.enter_context(enable_torch_wrap(False))
            for module, _, direct in self._swaps:
                module._forward_method = direct
            try:
                yield
            finally:
                for module, compiled_choice, _ in self._swaps:
                    module._forward_method = compiled_choice


class SwiftKVAttention(LlamaAttention):  # type: ignore[misc]
    """Q from the layer's input; K/V given by the model (its one projection of the SwiftKV input)."""

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

    def forward(
        self, positions: torch.Tensor, hidden_states: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> torch.Tensor:
        q, _ = self.q_proj_swiftkv(hidden_states)
        q, k = self.rotary_emb(positions, q, k)
        out, _ = self.o_proj(self.attn(q, k, v))
        return out

    def forward_rows(
        self,
        positions: torch.Tensor,
        hidden_rows: torch.Tensor,
        rows: Rows,
        k: torch.Tensor,
        v: torch.Tensor,
        attend: RowsAttention | None,
    ) -> torch.Tensor:
        """Q and O only for ``rows``. With ``attend`` the cache already holds this layer's K/V and
        attention runs from the rows only; without it (a backend we do not rebuild metadata for)
        vLLM's ``Attention`` writes ``k``/``v`` and attends from every token, the other queries zero."""
        q_rows, _ = self.q_proj_swiftkv(hidden_rows)
        if attend is not None:
            q_rows, _ = self.rotary_emb(positions[rows.index], q_rows, None)
            out, _ = self.o_proj(attend(self.attn, q_rows, self.attn.kv_cache))
            return out
        q = q_rows.new_zeros((k.shape[0] + 1, q_rows.shape[-1]))  # + 1: filler rows land there
        q[rows.target] = q_rows
        q, k = self.rotary_emb(positions, q[:-1], k)
        out, _ = self.o_proj(self.attn(q, k, v)[rows.index])
        return out


class SwiftKVDecoderLayer(LlamaDecoderLayer):  # type: ignore[misc]
    def __init__(self, vllm_config: VllmConfig, prefix: str = "", config: Any = None) -> None:
        super().__init__(
            vllm_config=vllm_config, prefix=prefix, config=config, attn_layer_type=SwiftKVAttention
        )

    def forward(
        self,
        positions: torch.Tensor,
        hidden_states: torch.Tensor,
        residual: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden_states, residual = self.input_layernorm(hidden_states, residual)
        hidden_states = self.self_attn(positions=positions, hidden_states=hidden_states, k=k, v=v)
        hidden_states, residual = self.post_attention_layernorm(hidden_states, residual)
        return self.mlp(hidden_states), residual

    def forward_rows(
        self,
        positions: torch.Tensor,
        hidden_rows: torch.Tensor,
        residual_rows: torch.Tensor,
        rows: Rows,
        k: torch.Tensor,
        v: torch.Tensor,
        attend: RowsAttention | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden_rows, residual_rows = self.input_layernorm(hidden_rows, residual_rows)
        hidden_rows = self.self_attn.forward_rows(positions, hidden_rows, rows, k, v, attend)
        hidden_rows, residual_rows = self.post_attention_layernorm(hidden_rows, residual_rows)
        return self.mlp(hidden_rows), residual_rows


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
class LlamaSwiftKVModel(nn.Module):  # type: ignore[misc]
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
        self.num_swiftkv_layers = config.num_hidden_layers - self.num_kv_layers
        if self.num_swiftkv_layers:
            self.norm_swiftkv = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
            # SingleInputKV: every later layer's K and V from the one normed input, as one matmul;
            # output partitions k_16, v_16, k_17, v_17, ... (each sharded by tensor parallelism)
            attn = self.layers[self.num_kv_layers].self_attn
            self.kv_size = attn.kv_size  # this rank's K (or V) width per layer
            total = attn.total_num_kv_heads * attn.head_dim
            tp = get_tensor_model_parallel_world_size()
            if total % tp or total // tp != self.kv_size:
                raise ValueError(
                    f"SwiftKV: tensor_parallel_size ({tp}) must divide the number of KV heads "
                    f"({attn.total_num_kv_heads}); replicated KV heads are not supported"
                )
            self.kv_proj_swiftkv = MergedColumnParallelLinear(
                config.hidden_size,
                [total] * (2 * self.num_swiftkv_layers),
                bias=False,
                quant_config=vllm_config.quant_config,
                prefix=f"{prefix}.kv_proj_swiftkv",
            )
        self.make_empty_intermediate_tensors = make_empty_intermediate_tensors_factory(
            ["hidden_states", "residual"], config.hidden_size
        )
        spec = vllm_config.speculative_config
        #: Query rows per request that can need logits in a step: 1 + draft tokens to verify.
        self.verify_rows = 1 + int(getattr(spec, "num_speculative_tokens", 0) or 0) if spec else 1
        #: Steps that took the saving path, and the later-layer rows they did not compute (a
        #: count the engine tests read; plain ints, no device sync).
        self.saving_steps = 0
        self.rows_skipped = 0
        #: Saving steps per way of writing the later layers' caches and of attending: one-launch or
        #: per-layer writes with attention from the kept rows only, or "generic" (every row attends).
        self.saving_paths: dict[str, int] = {}
        settings = parse_engine_settings(vllm_config.additional_config)
        #: The fewest rows a step must skip to take the saving path (below: the compiled model).
        self.min_saving_tokens = settings.swiftkv_min_saving_tokens or DEFAULT_SWIFTKV_MIN_SAVING_TOKENS
        self._direct: DirectKernels | None = None  # built at the first saving step (every op exists then)

    def saving_rows(self, num_tokens: int) -> Rows | None:
        """The rows the later layers must compute this step, or None to run every row.

        Per request its last ``verify_rows`` rows (the last token, plus the draft positions under
        speculation), clamped to the request's own rows: shorter requests repeat their first row,
        so the count is ``num_requests * verify_rows``, known on the host (no device sync, nothing
        data-dependent). None (the compiled, CUDA-graph path) when no request has more than
        ``verify_rows`` tokens (decode and draft verification), when fewer than
        ``min_saving_tokens`` rows would be skipped (the saving path's fixed cost), while
        a CUDA graph is being captured, or when the step's attention metadata does not say where
        requests start (dummy runs, micro-batches).
        """
        from vllm.forward_context import get_forward_context, is_forward_context_available

        if self.num_kv_layers == len(self.layers) or not is_forward_context_available():
            return None
        metadata = get_forward_context().attn_metadata
        if isinstance(metadata, dict):
            metadata = next(iter(metadata.values()), None)

        starts = getattr(metadata, "query_start_loc", None)
        max_query = getattr(metadata, "max_query_len", None)
        if not isinstance(starts, torch.Tensor) or starts.numel() < 2 or not isinstance(max_query, int):
            return None
        if max_query <= self.verify_rows:
            return None
        if starts.is_cuda and torch.cuda.is_current_stream_capturing():
            return None
        num_rows = (starts.numel() - 1) * self.verify_rows
        if num_tokens - num_rows < self.min_saving_tokens:
            return None
        self.saving_steps += 1
        self.rows_skipped += num_tokens - num_rows
        return pick_rows(starts, self.verify_rows, num_tokens)

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(input_ids)

    def forward(
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
            return self.norm(stream)
        kv, _ = self.kv_proj_swiftkv(self.norm_swiftkv(stream))
        hidden, residual = torch.zeros_like(stream), stream  # the stream is the residual, nothing added
        for i, layer in enumerate(islice(self.layers, self.num_kv_layers, None)):
            k, v = self._layer_kv(kv, i)
            hidden, residual = layer(positions, hidden, residual, k, v)
        hidden, _ = self.norm(hidden, residual)
        return hidden

    def _layer_kv(self, kv: torch.Tensor, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Later layer i's K and V columns of the shared projection's output."""
        w = self.kv_size
        return kv[:, 2 * i * w : (2 * i + 1) * w], kv[:, (2 * i + 1) * w : (2 * i + 2) * w]

    def forward_saving(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        inputs_embeds: torch.Tensor | None,
        rows: Rows,
    ) -> torch.Tensor:
        """SwiftKV's prefill saving (not compiled: the row count changes with the batch): layers
        < L_kv over every token; then every later layer's K/V for every token (one matmul, RoPE on
        all layers' K at once, the caches written in one launch where supported); then the later
        layers' Q, attention, O and MLP only for ``rows``. The other rows of the result are zeros:
        vLLM reads logits only at ``rows``."""
        if self._direct is None:
            self._direct = DirectKernels(self)
        with self._direct.active():
            hidden = inputs_embeds if inputs_embeds is not None else self.embed_input_ids(input_ids)
            residual: torch.Tensor | None = None
            for layer in islice(self.layers, 0, self.num_kv_layers):
                hidden, residual = layer(positions, hidden, residual)
            stream = hidden if residual is None else hidden + residual
            kv, _ = self.kv_proj_swiftkv(self.norm_swiftkv(stream))
            later = list(islice(self.layers, self.num_kv_layers, None))
            attend = self._rows_attention(later, rows, stream.dtype)
            if attend is not None:
                self._write_caches(later, kv, positions)
            h_rows, r_rows = torch.zeros_like(stream[rows.index]), stream[rows.index]
            for i, layer in enumerate(later):
                k, v = self._layer_kv(kv, i)
                h_rows, r_rows = layer.forward_rows(positions, h_rows, r_rows, rows, k, v, attend)
            h_rows, _ = self.norm(h_rows, r_rows)
            out = stream.new_zeros((stream.shape[0] + 1, stream.shape[1]))  # + 1: repeats land there
            out[rows.target] = h_rows
            return out[:-1]

    def _rows_attention(self, later: list[nn.Module], rows: Rows, dtype: torch.dtype) -> RowsAttention | None:
        """Attention from ``rows`` only, if the backend and this step's metadata allow it (one
        metadata for all later layers: they share a KV-cache group)."""
        from vllm.forward_context import get_forward_context

        metadata = get_forward_context().attn_metadata
        attend = None
        if isinstance(metadata, dict):
            names = [layer.self_attn.attn.layer_name for layer in later]
            first = metadata.get(names[0])
            if first is not None and all(metadata.get(n) is first for n in names):
                attn = later[0].self_attn
                attend = RowsAttention.build(attn.attn.impl, first, rows, attn.num_heads, dtype)
        if attend is None:
            self._count("generic")
        return attend

    def _count(self, path: str) -> None:
        self.saving_paths[path] = self.saving_paths.get(path, 0) + 1

    def _write_caches(self, later: list[nn.Module], kv: torch.Tensor, positions: torch.Tensor) -> None:
        """Every later layer's K/V of this step into its cache: RoPE on all layers' K in one call
        (they share positions and the rotary table), then one write for all layers."""
        from vllm.forward_context import get_forward_context

        tokens, layers = kv.shape[0], len(later)
        attn = later[0].self_attn
        head = attn.head_dim
        split = kv.view(tokens, layers, 2, self.kv_size)
        keys = split[:, :, 0].reshape(tokens, layers * self.kv_size)  # one copy; RoPE in place
        keys, _ = attn.rotary_emb(positions, keys, None)
        key = keys.view(tokens, layers, -1, head).transpose(0, 1)
        value = split[:, :, 1].view(tokens, layers, -1, head).transpose(0, 1)
        slots = get_forward_context().slot_mapping
        names = [layer.self_attn.attn.layer_name for layer in later]
        slot_mapping = slots[names[0]] if isinstance(slots, dict) else slots
        how = write_layers(
            [layer.self_attn.attn.impl for layer in later],
            [layer.self_attn.attn for layer in later],
            [layer.self_attn.attn.kv_cache for layer in later],
            key,
            value,
            slot_mapping,
        )
        self._count(how)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        params = dict(self.named_parameters())
        loaded: set[str] = set()
        rest: list[tuple[str, torch.Tensor]] = []
        for name, tensor in weights:
            if "_swiftkv" in name:
                if ".k_proj_swiftkv" in name or ".v_proj_swiftkv" in name:
                    # layer i's k/v -> partitions 2 (i - L_kv) and 2 (i - L_kv) + 1 of the shared one
                    target = "kv_proj_swiftkv.weight"
                    later = extract_layer_index(name) - self.num_kv_layers
                    shard = 2 * later + (0 if ".k_proj_swiftkv" in name else 1)
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
        return bool(extract_layer_index(name) >= self.num_kv_layers)


def _default_loader(param: torch.Tensor, tensor: torch.Tensor) -> None:
    param.data.copy_(tensor)


class LlamaSwiftKVForCausalLM(LlamaForCausalLM):  # type: ignore[misc]
    """The SwiftKV checkpoint architecture name; weights load under the published names."""

    packed_modules_mapping: ClassVar[dict[str, list[str]]] = {
        "qkv_proj": ["q_proj", "k_proj", "v_proj"],
        "gate_up_proj": ["gate_proj", "up_proj"],
    }

    def _init_model(self, vllm_config: VllmConfig, prefix: str = "", layer_type: Any = None) -> nn.Module:
        return LlamaSwiftKVModel(vllm_config=vllm_config, prefix=prefix)

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        rows = self.model.saving_rows(positions.shape[-1])
        if rows is None:
            return self.model(input_ids, positions, intermediate_tensors, inputs_embeds)
        return self.model.forward_saving(input_ids, positions, inputs_embeds, rows)
