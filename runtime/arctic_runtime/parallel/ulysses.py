"""Ulysses sequence parallelism and Shift Parallelism inside one vLLM worker (torch code).

The model vLLM sees is ``ArcticParallelModel``: it holds the **Ulysses model** (weights sharded over
the Ulysses tensor group, replicated over the sequence group) and, with shift, the **shift model**
(vLLM's own model, sharded over all TP x SP ranks), and runs one of them per step:

* **sp** (Ulysses x tensor): the step's tokens are padded to a multiple of SP and each sequence rank
  runs one contiguous chunk through the Ulysses model. In every attention layer
  (``UlyssesAttention``) q/k/v travel in one all-to-all over the sequence group, so each rank holds
  all tokens for 1/SP of its tensor shard's heads; vLLM's own attention runs on them with the step's
  attention metadata and writes the KV cache; a second all-to-all returns the output to sequence
  sharding. The hidden states are all-gathered over the sequence group before the logits.
* **tp** (full tensor parallelism): the shift model runs the whole step.

Both models' attention layers are the **same modules**: the shift model's attention modules are
replaced by the Ulysses model's after loading, and their registrations removed, so both modes read
and write one KV cache through one set of layer names (``layout`` explains why the heads match).

The Ulysses model is built with vLLM's tensor group temporarily swapped for the Ulysses tensor group
(``construction``), which shards its weights TP ways and, through the ``Attention.__init__`` patch
point, gives its attention layers the per-rank head counts of full tensor parallelism. While it
runs, the same swap routes its all-reduces to the Ulysses tensor group (``tensor_group``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from arctic_runtime.contract import ParallelMode, ParallelSettings, shift_mode
from arctic_runtime.parallel import layout

logger = logging.getLogger("arctic_runtime")

#: Prefix of the shift model's layer names (its attention layers are replaced, see above).
SHIFT_PREFIX = "arctic_shift"


@dataclass
class UlyssesGroups:
    """This rank's process groups (vLLM ``GroupCoordinator`` objects) and coordinates."""

    full: Any  # vLLM's tensor group: all TP x SP ranks of this engine
    tensor: Any  # the Ulysses tensor group: TP ranks
    sequence: Any  # the sequence group: SP ranks
    tp: int
    sp: int

    @property
    def tp_rank(self) -> int:
        return int(self.tensor.rank_in_group)

    @property
    def sp_rank(self) -> int:
        return int(self.sequence.rank_in_group)


_GROUPS: UlyssesGroups | None = None


def init_groups(settings: ParallelSettings) -> UlyssesGroups:
    """Create the Ulysses tensor and sequence groups (once per process; collective: every rank of
    the world calls this at the same point, which is model loading)."""
    global _GROUPS
    if _GROUPS is not None:
        return _GROUPS
    from vllm.distributed import parallel_state as ps

    full = ps.get_tp_group()
    world = ps.get_world_group()
    sp = settings.ulysses
    tp = full.world_size // sp
    groups = layout.rank_groups(world.world_size, tp, sp)
    backend = torch.distributed.get_backend(full.device_group)
    # New groups use NCCL (or gloo) directly: vLLM's custom all-reduce assumes its own group layout.
    custom = ps._ENABLE_CUSTOM_ALL_REDUCE
    ps.set_custom_all_reduce(False)
    try:
        tensor = ps.init_model_parallel_group(
            groups.tensor, world.local_rank, backend, group_name="arctic_ulysses_tp"
        )
        sequence = ps.init_model_parallel_group(
            groups.sequence, world.local_rank, backend, group_name="arctic_sp"
        )
    finally:
        ps.set_custom_all_reduce(custom)
    _GROUPS = UlyssesGroups(full=full, tensor=tensor, sequence=sequence, tp=tp, sp=sp)
    t, s = layout.coordinates(full.rank_in_group, sp)
    assert (t, s) == (_GROUPS.tp_rank, _GROUPS.sp_rank), "rank layout mismatch"
    return _GROUPS


@contextlib.contextmanager
def tensor_group(group: Any) -> Iterator[None]:
    """vLLM's tensor-parallel group is ``group`` inside the block (construction, loading, forward)."""
    from vllm.distributed import parallel_state as ps

    saved = ps._TP
    ps._TP = group
    try:
        yield
    finally:
        ps._TP = saved


@dataclass
class _Building:
    sp: int


#: Set while the Ulysses model is being built (read by the ``Attention.__init__`` patch point).
_BUILDING: _Building | None = None


@contextlib.contextmanager
def construction(groups: UlyssesGroups) -> Iterator[None]:
    """Build (and load) the Ulysses model: tensor group swapped, attention heads per full-TP rank."""
    global _BUILDING
    _BUILDING = _Building(sp=groups.sp)
    try:
        with tensor_group(groups.tensor):
            yield
    finally:
        _BUILDING = None


def attention_heads(num_heads: int, num_kv_heads: int | None) -> tuple[int, int | None]:
    """The head counts an attention layer gets while the Ulysses model is built: the model passes
    its tensor shard's counts, the layer holds one sequence rank's share (the full-TP share)."""
    if _BUILDING is None:
        return num_heads, num_kv_heads
    sp = _BUILDING.sp
    kv = num_heads if num_kv_heads is None else num_kv_heads
    if num_heads % sp:
        raise ValueError(f"{num_heads} attention heads per tensor shard do not split over ulysses {sp}")
    return num_heads // sp, (kv // sp if kv >= sp else 1)


# --------------------------------------------------------------------------------------------
# The per-step context and the all-to-all attention
# --------------------------------------------------------------------------------------------


@dataclass
class _Step:
    num_tokens: int = 0  # real tokens of the step (the rest of the padded chunks is dropped)


_STEP = _Step()


def _all_to_all(x: torch.Tensor, group: Any) -> torch.Tensor:
    """All-to-all over dim 0 of ``x`` ([SP, ...]): row j goes to rank j, row j of the result came
    from rank j."""
    out = torch.empty_like(x)
    torch.distributed.all_to_all_single(out, x.contiguous(), group=group.device_group)
    return out


class UlyssesAttention(nn.Module):  # type: ignore[misc]  # torch is untyped here
    """vLLM's attention layer (``inner``) behind the Ulysses all-to-all (see the module docstring).

    ``inner`` holds one full-TP rank's heads and is the module the shift model uses too; this
    wrapper only moves tensors between sequence and head sharding.
    """

    def __init__(
        self, inner: nn.Module, groups: UlyssesGroups, total_kv_heads: int, device: torch.device
    ) -> None:
        super().__init__()
        self.inner = inner
        self.groups = groups
        self.sp = groups.sp
        self.q_heads = int(inner.num_heads)  # per rank after the exchange
        self.kv_heads = int(inner.num_kv_heads)
        self.head_size = int(inner.head_size)
        self.head_size_v = int(getattr(inner, "head_size_v", inner.head_size))
        sources = layout.kv_head_sources(total_kv_heads, groups.tp, groups.sp, groups.tp_rank)
        self.register_buffer(
            "kv_index",
            torch.tensor([h for heads in sources for h in heads], dtype=torch.long, device=device),
            persistent=False,
        )
        self.layer_name = str(inner.layer_name)
        _LAYERS[self.layer_name] = self

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():
            # An opaque op that vLLM's compiler splits the graph at (``finish_engine_config``). Like
            # vLLM's own attention op it writes into an output allocated inside the graph piece
            # before it, so the next piece of a piecewise CUDA graph reads a fixed address.
            out = query.new_empty((query.shape[0], self.output_columns()))
            torch.ops.arctic.ulysses_attention(query, key, value, out, self.layer_name)
            return out
        return self.exchange_and_attend(query, key, value)

    def output_columns(self) -> int:
        return self.sp * self.q_heads * self.head_size_v

    def exchange_and_attend(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
    ) -> torch.Tensor:
        sp, chunk = self.sp, query.shape[0]
        hd, hd_v = self.head_size, self.head_size_v
        # [chunk, heads of my tensor shard] -> [SP, chunk, heads for rank j]
        q = query.view(chunk, sp, self.q_heads * hd).transpose(0, 1)
        k = key.view(chunk, -1, hd).index_select(1, self.kv_index).view(chunk, sp, self.kv_heads * hd)
        v = value.view(chunk, -1, hd_v).index_select(1, self.kv_index).view(chunk, sp, self.kv_heads * hd_v)
        packed = torch.cat([q, k.transpose(0, 1), v.transpose(0, 1)], dim=-1)
        received = _all_to_all(packed, self.groups.sequence).view(sp * chunk, -1)
        n = _STEP.num_tokens
        q_all, k_all, v_all = received[:n].split(
            [self.q_heads * hd, self.kv_heads * hd, self.kv_heads * hd_v], dim=-1
        )
        out = self.inner(q_all.contiguous(), k_all.contiguous(), v_all.contiguous())
        padded = out.new_zeros(sp * chunk, out.shape[-1])
        padded[:n] = out
        back = _all_to_all(padded.view(sp, chunk, -1), self.groups.sequence)
        # [SP, chunk, my heads of rank j] -> [chunk, heads of my tensor shard] (j-major, as q)
        return back.transpose(0, 1).reshape(chunk, sp * out.shape[-1])


#: This process's Ulysses attention layers by layer name (the custom op finds its layer here).
_LAYERS: dict[str, UlyssesAttention] = {}


@torch.library.custom_op("arctic::ulysses_attention", mutates_args=("out",))  # type: ignore[untyped-decorator]
def _ulysses_attention_op(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, out: torch.Tensor, layer_name: str
) -> None:
    out.copy_(_LAYERS[layer_name].exchange_and_attend(query, key, value))


@_ulysses_attention_op.register_fake  # type: ignore[untyped-decorator]
def _(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, out: torch.Tensor, layer_name: str
) -> None:
    return None


def wrap_attention(
    model: nn.Module, groups: UlyssesGroups, total_kv_heads: int, device: torch.device
) -> dict[str, nn.Module]:
    """Put every vLLM attention layer of ``model`` behind a ``UlyssesAttention``; returns the inner
    layers by layer name."""
    from vllm.model_executor.layers.attention.attention import Attention

    found: dict[str, nn.Module] = {}
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Attention):
                setattr(parent, name, UlyssesAttention(child, groups, total_kv_heads, device))
                found[str(child.layer_name)] = child
    if not found:
        raise ValueError("the model has no vLLM Attention layers to run Ulysses attention on")
    return found


def share_attention(shift: nn.Module, layers: dict[str, nn.Module], static_context: dict[str, Any]) -> int:
    """Make the shift model use the Ulysses model's attention layers (same KV cache, same layer
    names) and drop its own from vLLM's layer registry; returns how many were shared."""
    from vllm.model_executor.layers.attention.attention import Attention

    shared = 0
    for parent in list(shift.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Attention):
                own = str(child.layer_name)
                base_name = own.removeprefix(f"{SHIFT_PREFIX}.")
                if base_name not in layers:
                    raise ValueError(f"shift model layer {own} has no Ulysses twin {base_name}")
                setattr(parent, name, layers[base_name])
                static_context.pop(own, None)
                shared += 1
    if shared != len(layers):
        raise ValueError(f"shared {shared} attention layers, the Ulysses model has {len(layers)}")
    return shared


def parameter_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters and buffers (shared tensors once). On CPU, vLLM repacks
    linear weights into oneDNN handles outside the parameters, so there this counts less."""
    seen: dict[int, int] = {}
    for tensor in [*model.parameters(), *model.buffers()]:
        seen[tensor.data_ptr()] = tensor.numel() * tensor.element_size()
    return sum(seen.values())


# --------------------------------------------------------------------------------------------
# The model vLLM runs
# --------------------------------------------------------------------------------------------


class ArcticParallelModel(nn.Module):  # type: ignore[misc]
    """The Ulysses model and (with shift) the shift model behind vLLM's model interface."""

    def __init__(
        self,
        vllm_config: Any,
        ulysses: nn.Module,
        shift: nn.Module | None,
        groups: UlyssesGroups,
        settings: ParallelSettings,
    ) -> None:
        # vLLM recognises a model by ``__init__(vllm_config=...)``, ``embed_input_ids``, ``forward``
        # and ``compute_logits`` (interfaces_base); ``vllm_config`` is kept for that reason.
        super().__init__()
        self.vllm_config = vllm_config
        self.ulysses = ulysses
        self.shift = shift
        self.groups = groups
        self.settings = settings
        #: Tokens scheduled in the coming step (set by the runner hook); None in vLLM's dummy runs
        #: (profiling, warm-up, CUDA-graph capture), which run both models.
        self.step_tokens: int | None = None
        self.last_mode: ParallelMode | None = None
        #: This rank's chunk of the step's inputs, in buffers that keep their address from step to
        #: step (a CUDA graph replays reads of the addresses it captured), grown on first use.
        self._chunks: dict[str, torch.Tensor] = {}

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("ulysses"), name)

    def mode_for_step(self) -> ParallelMode | None:
        if self.step_tokens is None:
            return None
        return shift_mode(self.step_tokens, self.settings)

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: Any = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        mode = self.mode_for_step()
        if mode is None:  # a dummy run: exercise both models (memory profile, warm-up, graphs)
            if self.shift is not None:
                self.shift(input_ids, positions, intermediate_tensors, inputs_embeds, **kwargs)
            mode = "sp"
        self.last_mode = mode
        if mode == "tp":
            assert self.shift is not None
            return self.shift(input_ids, positions, intermediate_tensors, inputs_embeds, **kwargs)
        return self._ulysses_forward(input_ids, positions, intermediate_tensors, inputs_embeds, **kwargs)

    def _ulysses_forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: Any,
        inputs_embeds: torch.Tensor | None,
        **kwargs: Any,
    ) -> torch.Tensor:
        groups = self.groups
        n = positions.shape[-1]
        _total, chunk = layout.padded_tokens(n, groups.sp)
        start = groups.sp_rank * chunk

        def mine(name: str, x: torch.Tensor | None) -> torch.Tensor | None:
            """Rows start..start+chunk of x (zeros past its end) in this input's fixed buffer."""
            if x is None:
                return None
            buf = self._chunks.get(name)
            if buf is None or buf.shape[0] < chunk or buf.shape[1:] != x.shape[1:] or buf.dtype != x.dtype:
                buf = x.new_zeros((chunk, *x.shape[1:]))
                self._chunks[name] = buf
            rows = max(0, min(chunk, n - start))
            view = buf[:chunk]
            view[:rows].copy_(x[start : start + rows])
            view[rows:].zero_()
            return view

        _STEP.num_tokens = n
        with tensor_group(groups.tensor):
            hidden = self.ulysses(
                mine("input_ids", input_ids),
                mine("positions", positions),
                intermediate_tensors,
                mine("inputs_embeds", inputs_embeds),
                **kwargs,
            )
        if not isinstance(hidden, torch.Tensor):
            raise TypeError("Ulysses sequence parallelism supports models that return hidden states only")
        return groups.sequence.all_gather(hidden.contiguous(), dim=0)[:n]

    def compute_logits(self, hidden_states: torch.Tensor) -> Any:
        # Hidden states are whole on every rank in both modes; the shift model's head is sharded
        # over all ranks (less work per rank), the Ulysses model's over its tensor group.
        if self.shift is not None:
            return self.shift.compute_logits(hidden_states)
        with tensor_group(self.groups.tensor):
            return self.ulysses.compute_logits(hidden_states)

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        model = self.shift if self.shift is not None else self.ulysses
        if model is self.ulysses:
            with tensor_group(self.groups.tensor):
                return model.embed_input_ids(input_ids)
        return model.embed_input_ids(input_ids)

    def load_weights(self, weights: Any) -> Any:
        raise NotImplementedError("reloading weights is not supported with Ulysses sequence parallelism")
