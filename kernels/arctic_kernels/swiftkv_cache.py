"""Write the K/V of every SwiftKV layer into vLLM's paged caches in one launch.

Under SwiftKV, the K and V of all layers >= L_kv come from one input, so after one matmul a prefill
step holds K/V for ``L`` layers x ``T`` tokens at once. vLLM writes a layer's cache inside that
layer's attention call (``reshape_and_cache_flash``: one launch per layer); this writes all ``L``
layers' in one launch: program ``(t, l)`` copies token ``t``'s heads of layer ``l`` to its slot.

Cache layout: vLLM 0.26's FlashAttention / FlashInfer-style per-layer tensor
``[2, num_blocks, block_size, kv_heads, head_dim]`` (K at ``[0]``, V at ``[1]``); ``slot_mapping[t]
= block * block_size + offset``, negative = padding (skipped), as vLLM's own op. The caches may be
separate tensors (vLLM allocates one per layer): the kernel reads their base addresses from a table.

``write_kv_reference`` is the plain-PyTorch definition; ``tests/unit/test_swiftkv_cache.py`` checks
it against vLLM's own per-layer write, and the Triton kernel against it on CUDA.
"""

from __future__ import annotations

from typing import Any

import torch


def write_kv_reference(
    key: torch.Tensor, value: torch.Tensor, caches: list[torch.Tensor], slot_mapping: torch.Tensor
) -> None:
    """``key``/``value``: ``[L, T, kv_heads, head_dim]``; ``caches[l]``: ``[2, blocks, block_size,
    kv_heads, head_dim]``; tokens with a negative slot are skipped."""
    keep = slot_mapping >= 0
    slots = slot_mapping[keep].long()
    for layer, cache in enumerate(caches):
        heads, dim = cache.shape[-2], cache.shape[-1]
        cache[0].view(-1, heads, dim)[slots] = key[layer][keep].to(cache.dtype)
        cache[1].view(-1, heads, dim)[slots] = value[layer][keep].to(cache.dtype)


def _kernel() -> Any:
    import triton
    import triton.language as tl

    @triton.jit  # type: ignore[untyped-decorator]
    # no annotations but tl.constexpr: Triton resolves annotations as globals inside @jit
    def write_kv_kernel(  # type: ignore[no-untyped-def]
        key_ptr,
        value_ptr,
        cache_table,
        slot_ptr,
        kv_stride_layer,
        kv_stride_token,
        cache_stride_kv,
        cache_stride_slot,
        ROW: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        t = tl.program_id(0)
        layer = tl.program_id(1)
        slot = tl.load(slot_ptr + t).to(tl.int64)
        if slot < 0:
            return
        cache = tl.load(cache_table + layer).to(tl.pointer_type(key_ptr.dtype.element_ty))
        src = layer.to(tl.int64) * kv_stride_layer + t.to(tl.int64) * kv_stride_token
        dst = slot * cache_stride_slot
        for start in range(0, ROW, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            mask = offs < ROW
            k = tl.load(key_ptr + src + offs, mask=mask)
            v = tl.load(value_ptr + src + offs, mask=mask)
            tl.store(cache + dst + offs, k, mask=mask)
            tl.store(cache + cache_stride_kv + dst + offs, v, mask=mask)

    return write_kv_kernel


_KERNEL: Any = None


def write_kv(
    key: torch.Tensor, value: torch.Tensor, caches: list[torch.Tensor], slot_mapping: torch.Tensor
) -> None:
    """The one-launch Triton version of ``write_kv_reference`` (CUDA; caches of ``key``'s dtype)."""
    global _KERNEL
    import triton

    if _KERNEL is None:
        _KERNEL = _kernel()
    layers, tokens, heads, dim = key.shape
    if len(caches) != layers or value.shape != key.shape:
        raise ValueError(f"{layers} layers of K/V but {len(caches)} caches, or V {tuple(value.shape)} != K")
    first = caches[0]
    for c in caches:
        if c.dtype != key.dtype or c.stride() != first.stride() or c.shape != first.shape:
            raise ValueError("every cache must have K/V's dtype and the first cache's shape and strides")
        if c.stride(-1) != 1 or c.stride(-2) != dim or c.stride(-3) != heads * dim:
            raise ValueError("a cache's (block_size, kv_heads, head_dim) must be contiguous")
    key, value = key.contiguous(), value.contiguous()
    table = torch.tensor([c.data_ptr() for c in caches], dtype=torch.int64, device=key.device)
    row = heads * dim
    _KERNEL[(tokens, layers)](
        key,
        value,
        table,
        slot_mapping.contiguous(),
        key.stride(0),
        key.stride(1),
        first.stride(0),
        row,
        ROW=row,
        BLOCK=min(1024, triton.next_power_of_2(row)),
    )
