"""The SwiftKV bulk K/V cache write: the PyTorch reference against the definition of vLLM 0.26's
FlashAttention cache layout, and the one-launch Triton kernel against the reference (CUDA only: marked
``cuda``, skipped with that reason elsewhere, never counted as passed on a CPU machine)."""

from __future__ import annotations

import pytest
import torch

from arctic_kernels.swiftkv_cache import write_kv, write_kv_reference
from arctic_runtime.swiftkv.rows import flash_views

SHAPES = [  # layers, tokens, kv_heads, head_dim, blocks, block_size
    (15, 37, 3, 64, 8, 16),
    (4, 1, 8, 128, 2, 16),
    (16, 300, 8, 128, 40, 16),
]


def inputs(
    shape: tuple[int, ...], dtype: torch.dtype, device: str
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """K/V as the model holds them (one matmul's output for all layers: K copied out for RoPE, V a
    strided view), each layer's cache as vLLM allocates it (stored [blocks, block, heads, K|V],
    logical [blocks, heads, block, 2 * head_dim]) and slots with padding (negative) and fewer
    slots than tokens (padded batch)."""
    layers, tokens, heads, dim, blocks, block = shape
    gen = torch.Generator().manual_seed(sum(shape))
    out = torch.randn((tokens, layers, 2, heads * dim), generator=gen).to(dtype).to(device)
    key = out[:, :, 0].reshape(tokens, layers, heads, dim).transpose(0, 1)
    value = out[:, :, 1].view(tokens, layers, heads, dim).transpose(0, 1)
    slots = torch.randperm(blocks * block, generator=gen)[: max(1, tokens - 2)]
    slots[1::7] = -1  # padding tokens are skipped
    stored = [torch.zeros((blocks, block, heads, 2 * dim), dtype=dtype, device=device) for _ in range(layers)]
    logical = [s.permute(0, 2, 1, 3) for s in stored]
    return key, value, stored, logical, slots.to(device)


@pytest.mark.parametrize("shape", SHAPES)
def test_reference_writes_the_flash_layout(shape: tuple[int, ...]) -> None:
    """Token t's heads of layer l go to block slot // B, offset slot % B: K in the first head_dim
    entries of each head, V in the next; padding slots and tokens past the slots are not written."""
    key, value, stored, logical, slots = inputs(shape, torch.float32, "cpu")
    dim = key.shape[-1]
    expected = [s.clone() for s in stored]
    block = stored[0].shape[1]
    for layer in range(len(stored)):
        for t, slot in enumerate(slots.tolist()):
            if slot >= 0:
                expected[layer][slot // block, slot % block, :, :dim] = key[layer, t]
                expected[layer][slot // block, slot % block, :, dim:] = value[layer, t]
    write_kv_reference(key, value, [flash_views(c, dim) for c in logical], slots)
    for got, want in zip(stored, expected, strict=True):
        assert torch.equal(got, want)
    assert sum(int(s.count_nonzero()) for s in stored) > 0


def test_write_refuses_caches_of_another_dtype() -> None:
    key, value, _, logical, slots = inputs(SHAPES[0], torch.float32, "cpu")
    caches = [flash_views(c.to(torch.bfloat16), key.shape[-1]) for c in logical]
    with pytest.raises(ValueError, match="dtype"):
        write_kv(key, value, caches, slots)


@pytest.mark.cuda
@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="Triton kernel: needs a CUDA GPU (not counted on CPU)"
)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("shape", SHAPES)
def test_triton_kernel_equals_reference(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    key, value, stored, logical, slots = inputs(shape, dtype, "cuda")
    dim = key.shape[-1]
    expected = [s.clone() for s in stored]
    write_kv_reference(key, value, [flash_views(e.permute(0, 2, 1, 3), dim) for e in expected], slots)
    write_kv(key, value, [flash_views(c, dim) for c in logical], slots)
    torch.cuda.synchronize()
    for got, want in zip(stored, expected, strict=True):
        assert torch.equal(got, want)  # a copy: bit-exact
