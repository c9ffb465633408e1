"""Write the K/V of every SwiftKV layer into vLLM's paged caches in one launch.

Under SwiftKV, the K and V of all layers >= L_kv come from one input, so after one matmul a prefill
step holds K/V for ``L`` layers x ``T`` tokens at once. vLLM writes a layer's cache inside that
layer's attention step (``reshape_and_cache_flash``: one launch per layer); this writes all ``L``
layers' in one launch: program ``(t, l)`` copies token ``t``'s heads of layer ``l`` to its slot.

Cache layout: each layer's cache is given as vLLM 0.26 FlashAttention sees it, a (key, value) pair of
views ``[num_blocks, block_size, kv_heads, head_dim]`` into one tensor (its logical shape is
``[num_blocks, kv_heads, block_size, 2 * head_dim]``, stored block, slot, head, K then V:
``arctic_runtime.swiftkv.rows.flash_views`` splits it as the backend does). ``slot_mapping[t] =
block * block_size + offset``; negative = padding (skipped), as vLLM's own op; tokens past
``len(slot_mapping)`` are padding too. vLLM allocates one tensor per layer, so the kernel reads the
layers' base addresses from a table; all layers must share strides and the V-after-K offset.

``write_kv_reference`` is the plain-PyTorch definition; ``tests/unit/test_swiftkv_cache.py`` checks
it against the layout's definition, and the Triton kernel against it on CUDA.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

Cache = tuple[torch.Tensor, torch.Tensor]


def write_kv_reference(
    key: torch.Tensor, value: torch.Tensor, caches: Sequence[Cache], slot_mapping: torch.Tensor
) -> None:
    """``key``/``value``: ``[L, T, kv_heads, head_dim]`` (any strides); ``caches[l]``: layer l's
    (key_cache, value_cache), each ``[num_blocks, block_size, kv_heads, head_dim]``."""
    tokens = slot_mapping.shape[0]
    keep = slot_mapping >= 0
    slots = slot_mapping[keep].long()
    for layer, (key_cache, value_cache) in enumerate(caches):
        block_size = key_cache.shape[1]
        blocks, offsets = slots // block_size, slots % block_size
        key_cache[blocks, offsets] = key[layer, :tokens][keep].to(key_cache.dtype)
        value_cache[blocks, offsets] = value[layer, :tokens][keep].to(value_cache.dtype)


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
        key_stride_layer,
        key_stride_token,
        key_stride_head,
        value_stride_layer,
        value_stride_token,
        value_stride_head,
        cache_stride_block,
        cache_stride_slot,
        cache_stride_head,
        value_offset,
        block_size,
        HEADS: tl.constexpr,
        DIM: tl.constexpr,
        BLOCK_H: tl.constexpr,
        BLOCK_D: tl.constexpr,
    ):
        t = tl.program_id(0).to(tl.int64)
        layer = tl.program_id(1).to(tl.int64)
        slot = tl.load(slot_ptr + t).to(tl.int64)
        if slot < 0:
            return
        cache = tl.load(cache_table + layer).to(tl.pointer_type(key_ptr.dtype.element_ty))
        block = slot // block_size
        offset = slot % block_size
        h = tl.arange(0, BLOCK_H)[:, None]
        d = tl.arange(0, BLOCK_D)[None, :]
        mask = (h < HEADS) & (d < DIM)
        k = tl.load(
            key_ptr + layer * key_stride_layer + t * key_stride_token + h * key_stride_head + d, mask=mask
        )
        v = tl.load(
            value_ptr + layer * value_stride_layer + t * value_stride_token + h * value_stride_head + d,
            mask=mask,
        )
        dst = cache + block * cache_stride_block + offset * cache_stride_slot + h * cache_stride_head + d
        tl.store(dst, k, mask=mask)
        tl.store(dst + value_offset, v, mask=mask)

    return write_kv_kernel


_KERNEL: Any = None


def write_kv(
    key: torch.Tensor, value: torch.Tensor, caches: Sequence[Cache], slot_mapping: torch.Tensor
) -> None:
    """The one-launch Triton version of ``write_kv_reference`` (CUDA; caches of ``key``'s dtype)."""
    global _KERNEL
    import triton

    layers, _, heads, dim = key.shape
    if len(caches) != layers or value.shape != key.shape:
        raise ValueError(f"{layers} layers of K/V but {len(caches)} caches, or V {tuple(value.shape)} != K")
    if key.stride(-1) != 1 or value.stride(-1) != 1:
        raise ValueError("K/V need a contiguous head_dim")
    first_key, first_value = caches[0]
    item = first_key.element_size()
    value_offset = (first_value.data_ptr() - first_key.data_ptr()) // item
    for key_cache, value_cache in caches:
        if key_cache.dtype != key.dtype or value_cache.dtype != key.dtype:
            raise ValueError(f"every cache must have K/V's dtype {key.dtype}, not {key_cache.dtype}")
        if key_cache.stride() != first_key.stride() or value_cache.stride() != first_key.stride():
            raise ValueError("every layer's key and value caches must share the first key cache's strides")
        if key_cache.shape != first_key.shape or key_cache.shape[2:] != (heads, dim):
            raise ValueError(f"caches must be [blocks, block_size, {heads}, {dim}] like the first")
        if (value_cache.data_ptr() - key_cache.data_ptr()) // item != value_offset or key_cache.stride(
            -1
        ) != 1:
            raise ValueError("every layer's value cache must sit at the same offset from its key cache")
    if _KERNEL is None:
        _KERNEL = _kernel()
    table = torch.tensor([k.data_ptr() for k, _ in caches], dtype=torch.int64, device=key.device)
    tokens = slot_mapping.shape[0]
    if tokens == 0:
        return
    _KERNEL[(tokens, layers)](
        key,
        value,
        table,
        slot_mapping.contiguous(),
        key.stride(0),
        key.stride(1),
        key.stride(2),
        value.stride(0),
        value.stride(1),
        value.stride(2),
        first_key.stride(0),
        first_key.stride(1),
        first_key.stride(2),
        value_offset,
        first_key.shape[1],
        HEADS=heads,
        DIM=dim,
        BLOCK_H=triton.next_power_of_2(heads),
        BLOCK_D=triton.next_power_of_2(dim),
    )
