"""The SwiftKV bulk K/V cache write: the PyTorch reference against vLLM's own per-layer cache
write, and the one-launch Triton kernel against the reference (CUDA only: marked ``cuda``, skipped
with that reason elsewhere, never counted as passed on a CPU machine)."""

from __future__ import annotations

import pytest
import torch

from arctic_kernels.swiftkv_cache import write_kv, write_kv_reference

SHAPES = [  # layers, tokens, kv_heads, head_dim, blocks, block_size
    (15, 37, 3, 64, 8, 16),
    (4, 1, 8, 128, 2, 16),
    (16, 300, 8, 128, 40, 16),
]


def inputs(
    shape: tuple[int, ...], dtype: torch.dtype, device: str
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], torch.Tensor]:
    layers, tokens, heads, dim, blocks, block = shape
    gen = torch.Generator().manual_seed(sum(shape))
    key = torch.randn((layers, tokens, heads, dim), generator=gen).to(dtype)
    value = torch.randn((layers, tokens, heads, dim), generator=gen).to(dtype)
    slots = torch.randperm(blocks * block, generator=gen)[:tokens]
    slots[::7] = -1  # padding tokens are skipped
    caches = [torch.zeros((2, blocks, block, heads, dim), dtype=dtype) for _ in range(layers)]
    return key.to(device), value.to(device), [c.to(device) for c in caches], slots.to(device)


@pytest.mark.parametrize("shape", SHAPES)
def test_reference_equals_a_per_layer_write(shape: tuple[int, ...]) -> None:
    """vLLM's CPU build has no flash-layout cache op, so the per-layer write is vLLM's Python
    semantics of ``reshape_and_cache_flash``: token t's heads go to block slot // B, offset slot % B."""
    key, value, caches, slots = inputs(shape, torch.float32, "cpu")
    expected = [c.clone() for c in caches]
    block = caches[0].shape[2]
    for layer in range(len(caches)):
        for t, slot in enumerate(slots.tolist()):
            if slot >= 0:
                expected[layer][0, slot // block, slot % block] = key[layer, t]
                expected[layer][1, slot // block, slot % block] = value[layer, t]
    write_kv_reference(key, value, caches, slots)
    for got, want in zip(caches, expected, strict=True):
        assert torch.equal(got, want)


@pytest.mark.cuda
@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="Triton kernel: needs a CUDA GPU (not counted on CPU)"
)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("shape", SHAPES)
def test_triton_kernel_equals_reference(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    key, value, caches, slots = inputs(shape, dtype, "cuda")
    expected = [c.clone() for c in caches]
    write_kv_reference(key, value, expected, slots)
    write_kv(key, value, caches, slots)
    torch.cuda.synchronize()
    for got, want in zip(caches, expected, strict=True):
        assert torch.equal(got, want)  # a copy: bit-exact
