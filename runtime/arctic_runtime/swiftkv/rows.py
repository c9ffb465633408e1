"""SwiftKV's prefill saving, the parts that talk to vLLM 0.26's paged KV cache.

In a saving step the later layers (>= L_kv) compute queries only for the rows whose logits are read
(each request's last ``per_request`` rows), but their keys and values for every token. This module:

* picks those rows (``pick_rows``: a fixed count, no device sync; requests with fewer rows keep
  what they have and filler rows at the end land in a discarded row),
* writes every later layer's K/V into the paged caches at once (``write_layers``: one Triton launch
  on CUDA with the FlashAttention layout, else vLLM's own per-layer write),
* attends from those rows only (``RowsAttention``): the step's attention metadata rebuilt for a
  query layout of ``per_request`` rows per request against the full cached sequences, then the
  backend's own attention call. Rebuilt for two backends, FlashAttention (CUDA) and CPU_ATTN (vLLM's
  CPU build); any other backend, an FP8 cache or metadata with features we do not rebuild (decode
  context parallelism, per-request causality, multimodal prefix ranges) gets ``None`` and the model
  takes its generic path (full attention with the other queries zero).

The rebuilt metadata keeps ``seq_lens`` and ``block_table`` and gives each request its kept rows as
its queries, so the j-th of a request's q kept rows, with sequence length n, attends to keys
0 .. n - q + j (bottom-right causal alignment, as vLLM's own chunked prefill): its own position.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch


class Rows(NamedTuple):
    """The rows a saving step computes in the later layers: each request's last ``min(its rows,
    per_request)`` rows, request after request, then filler up to ``num_requests * per_request``
    (a fixed count, known on the host: no device sync)."""

    index: torch.Tensor  # which of the step's rows (filler: row 0)
    target: torch.Tensor  # where each row's output goes: its own row, or ``num_tokens`` (discarded)
    query_start: torch.Tensor  # [num_requests + 1] offsets of each request's kept rows in ``index``
    per_request: int
    num_requests: int


def pick_rows(starts: torch.Tensor, per_request: int, num_tokens: int) -> Rows:
    """Each request's last ``per_request`` rows, fewer for a request with fewer (``starts``: the
    step's query start offsets, requests + 1).

    The kept rows of a request are its last ones, contiguous and in order, so attention from them
    (``RowsAttention``, bottom-right causal alignment against the request's whole sequence) gives
    each its own position. The filler rows after the last request's are not attended from; their
    ``target`` is ``num_tokens``, one past the step's rows, and their outputs are dropped."""
    begins, ends = starts[:-1].long(), starts[1:].long()
    requests = begins.numel()
    count = torch.clamp(ends - begins, min=0, max=per_request)
    query_start = torch.zeros(requests + 1, dtype=torch.int32, device=starts.device)  # as vLLM's
    query_start[1:] = torch.cumsum(count, 0)
    slot = torch.arange(requests * per_request, device=starts.device)
    owner = torch.searchsorted(query_start[1:].long(), slot, right=True).clamp(max=max(requests - 1, 0))
    row = ends[owner] - count[owner] + (slot - query_start[owner].long())
    valid = slot < query_start[-1].long()
    index = torch.where(valid, row.clamp(0, num_tokens - 1), torch.zeros_like(row))
    target = torch.where(valid, index, torch.full_like(index, num_tokens))
    return Rows(index, target, query_start, per_request, requests)


def flash_views(kv_cache: torch.Tensor, head_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """vLLM 0.26 FlashAttention's per-layer cache, logical ``[blocks, kv_heads, block_size,
    2 * head_size]``, as its (key, value) views ``[blocks, block_size, kv_heads, head_size]``
    (the backend's own split)."""
    key_cache, value_cache = kv_cache.transpose(1, 2).split(head_size, dim=-1)
    return key_cache, value_cache


def _backend(impl: Any) -> str | None:
    name = type(impl).__name__
    if name == "FlashAttentionImpl":
        return "flash"
    if name == "CPUAttentionBackendImpl":
        return "cpu"
    return None


def write_layers(
    impls: Sequence[Any],
    layers: Sequence[Any],
    caches: Sequence[torch.Tensor],
    key: torch.Tensor,
    value: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> str:
    """Write ``key``/``value`` (``[L, T, kv_heads, head_size]``) of L layers into their caches.

    One Triton launch for all L layers where it applies (CUDA, FlashAttention, caches in the model's
    dtype); otherwise each layer's own ``do_kv_cache_update`` (vLLM's op for that backend). Returns
    which was used ("one-launch" or "per-layer")."""
    if (
        key.is_cuda
        and all(_backend(i) == "flash" and i.kv_cache_dtype == "auto" for i in impls)
        and all(c.dtype == key.dtype for c in caches)
    ):
        from arctic_kernels.swiftkv_cache import write_kv

        head_size = key.shape[-1]
        write_kv(key, value, [flash_views(c, head_size) for c in caches], slot_mapping)
        return "one-launch"
    for layer_index, (impl, layer, cache) in enumerate(zip(impls, layers, caches, strict=True)):
        impl.do_kv_cache_update(
            layer, key[layer_index].contiguous(), value[layer_index].contiguous(), cache, slot_mapping
        )
    return "per-layer"


class RowsAttention:
    """Attention from ``rows`` only, against the cached sequences, for one saving step.

    ``build`` returns None where the backend or the step's metadata is not one we rebuild."""

    def __init__(self, impl: Any, metadata: Any) -> None:
        self.impl, self.metadata = impl, metadata

    @classmethod
    def build(
        cls, impl: Any, metadata: Any, rows: Rows, num_heads: int, dtype: torch.dtype
    ) -> RowsAttention | None:
        backend = _backend(impl)
        if backend is None or impl.kv_cache_dtype != "auto" or getattr(impl, "sinks", None) is not None:
            return None
        if not _plain_causal(metadata):
            return None
        per, n = rows.per_request, rows.num_requests
        starts = rows.query_start
        common = {"num_actual_tokens": n * per, "max_query_len": per, "query_start_loc": starts}
        if backend == "flash":
            # decode context parallelism splits the cache across ranks; vLLM 0.26's builder sets
            # max_dcp_context_kv_len to 0 (not None) on a single rank, so ask the rank count
            split_cache = getattr(metadata, "dcp_context_kv_lens", None) is not None
            if getattr(impl, "dcp_world_size", 1) > 1 or split_cache:
                return None
            if getattr(metadata, "mm_prefix_range_tensor", None) is not None:
                return None
            if getattr(metadata, "rswa_prefix_lens", None) is not None:
                return None
            rebuilt = dataclasses.replace(
                metadata, **common, use_cascade=False, scheduler_metadata=None, max_num_splits=0
            )
        else:
            import vllm.envs as envs
            from vllm import _custom_ops as ops

            if getattr(metadata, "encoder_cache", None) is not None:
                return None
            scheduler = ops.cpu_attn_get_scheduler_metadata(
                num_reqs=n,
                num_heads=num_heads,
                num_kv_heads=impl.num_kv_heads,
                head_dim=impl.head_size,
                seq_lens=metadata.seq_lens,
                dtype=dtype,
                query_start_loc=starts,
                causal=True,
                sliding_window_size=impl.sliding_window,
                isa=impl.isa,
                enable_kv_split=envs.VLLM_CPU_ATTN_SPLIT_KV,
                dynamic_causal=None,
            )
            rebuilt = dataclasses.replace(
                metadata, **common, scheduler_metadata=scheduler, use_sdpa_prefill=False
            )
        return cls(impl, rebuilt)

    def __call__(self, layer: Any, query: torch.Tensor, kv_cache: torch.Tensor) -> torch.Tensor:
        """``query``: ``[rows, num_heads * head_size]`` (RoPE applied); returns the same shape."""
        heads = query.shape[-1] // self.impl.head_size
        q = query.view(-1, heads, self.impl.head_size)
        out = torch.zeros_like(q)  # filler rows are not attended from: zeros, not stale memory
        # key/value None: attend only (the cache already holds every token of this step)
        self.impl.forward(layer, q, None, None, kv_cache, self.metadata, out)
        return out.view(query.shape)


def _plain_causal(metadata: Any) -> bool:
    causal = getattr(metadata, "causal", True)
    if isinstance(causal, torch.Tensor) or causal is not True:
        return False
    return getattr(metadata, "dynamic_causal", None) is None
