"""SwiftKV's attention from the kept rows only: on vLLM's own attention backends (the CPU build's
CPU_ATTN here; FlashAttention on CUDA, marked ``cuda`` and skipped with that reason elsewhere), the
rebuilt metadata must give each kept row exactly what the backend's full attention gives that row,
for prompt chunks with cached context, decode-sized requests shorter than the rows kept (their
repeats are discarded) and an empty request."""

from __future__ import annotations

import itertools
import types
from typing import Any
from unittest import mock

import pytest
import torch

from arctic_runtime.swiftkv.rows import RowsAttention, pick_rows

HEADS, KV_HEADS, HEAD_SIZE, BLOCK = 9, 3, 64, 16
#: (tokens already cached, new query tokens) per request
REQUESTS = [(0, 40), (23, 17), (50, 1), (7, 3), (0, 2), (0, 1), (33, 0)]


def layer() -> Any:
    one = torch.ones(1)
    return types.SimpleNamespace(
        _k_scale_float=1.0, _v_scale_float=1.0, _q_scale=one, _k_scale=one, _v_scale=one, _q_scale_float=1.0
    )


def cpu_backend(dtype: torch.dtype) -> tuple[Any, Any]:
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackendImpl, CPUAttentionMetadata

    config = types.SimpleNamespace(
        model_config=types.SimpleNamespace(dtype=dtype), cache_config=types.SimpleNamespace(block_size=BLOCK)
    )
    with mock.patch("vllm.v1.attention.backends.cpu_attn.get_current_vllm_config", return_value=config):
        impl = CPUAttentionBackendImpl(HEADS, HEAD_SIZE, HEAD_SIZE**-0.5, KV_HEADS, None, None, "auto")

    def metadata(starts: torch.Tensor, seq_lens: torch.Tensor, table: torch.Tensor, tokens: int) -> Any:
        import vllm.envs as envs
        from vllm import _custom_ops as ops

        scheduler = ops.cpu_attn_get_scheduler_metadata(
            num_reqs=len(seq_lens),
            num_heads=HEADS,
            num_kv_heads=KV_HEADS,
            head_dim=HEAD_SIZE,
            seq_lens=seq_lens,
            dtype=dtype,
            query_start_loc=starts,
            causal=True,
            sliding_window_size=-1,
            isa=impl.isa,
            enable_kv_split=envs.VLLM_CPU_ATTN_SPLIT_KV,
        )
        return CPUAttentionMetadata(
            num_actual_tokens=tokens,
            max_query_len=int((starts[1:] - starts[:-1]).max()),
            query_start_loc=starts,
            max_seq_len=int(seq_lens.max()),
            seq_lens=seq_lens,
            block_table=table,
            slot_mapping=torch.zeros(tokens, dtype=torch.int64),
            scheduler_metadata=scheduler,
        )

    return impl, metadata


def flash_backend(dtype: torch.dtype) -> tuple[Any, Any]:
    from vllm.v1.attention.backends.flash_attn import FlashAttentionImpl, FlashAttentionMetadata

    impl = FlashAttentionImpl(HEADS, HEAD_SIZE, HEAD_SIZE**-0.5, KV_HEADS, None, None, "auto")

    def metadata(starts: torch.Tensor, seq_lens: torch.Tensor, table: torch.Tensor, tokens: int) -> Any:
        return FlashAttentionMetadata(
            num_actual_tokens=tokens,
            max_query_len=int((starts[1:] - starts[:-1]).max()),
            query_start_loc=starts,
            max_seq_len=int(seq_lens.max()),
            seq_lens=seq_lens,
            block_table=table,
            slot_mapping=torch.zeros(tokens, dtype=torch.int64, device=starts.device),
            use_cascade=False,
            common_prefix_len=0,
            cu_prefix_query_lens=None,
            prefix_kv_lens=None,
            suffix_kv_lens=None,
            max_dcp_context_kv_len=0,  # what vLLM 0.26's builder sets on a single rank
        )

    return impl, metadata


def allocate(backend: str, blocks: int, dtype: torch.dtype, device: str) -> torch.Tensor:
    if backend == "flash":  # vLLM 0.26's NHD stride order: stored [blocks, block, heads, 2 * head_size]
        return torch.zeros(blocks, BLOCK, KV_HEADS, 2 * HEAD_SIZE, dtype=dtype, device=device).permute(
            0, 2, 1, 3
        )
    return torch.zeros(blocks, KV_HEADS, BLOCK, 2 * HEAD_SIZE, dtype=dtype, device=device)


def check_rows_attention(backend: str, dtype: torch.dtype, device: str, tolerance: float) -> None:
    impl, build_metadata = (flash_backend if backend == "flash" else cpu_backend)(dtype)
    gen = torch.Generator().manual_seed(0)
    blocks = 40
    cache = allocate(backend, blocks, dtype, device)
    order = torch.randperm(blocks, generator=gen)
    table = torch.zeros(len(REQUESTS), 8, dtype=torch.int32)
    seq_lens, starts, used = [], [0], 0
    for r, (cached, new) in enumerate(REQUESTS):
        n = cached + new
        need = -(-n // BLOCK)
        table[r, :need] = order[used : used + need]
        used += need
        seq_lens.append(n)
        starts.append(starts[-1] + new)
        # every token of the sequence, cached context and this step's, is in the cache
        slots = torch.tensor(
            [int(table[r, p // BLOCK]) * BLOCK + p % BLOCK for p in range(n)], dtype=torch.int64
        )
        key = torch.randn(n, KV_HEADS, HEAD_SIZE, generator=gen).to(dtype)
        value = torch.randn(n, KV_HEADS, HEAD_SIZE, generator=gen).to(dtype)
        impl.do_kv_cache_update(layer(), key.to(device), value.to(device), cache, slots.to(device))
    tokens = starts[-1]
    start_t = torch.tensor(starts, dtype=torch.int32, device=device)
    metadata = build_metadata(
        start_t, torch.tensor(seq_lens, dtype=torch.int32, device=device), table.to(device), tokens
    )
    query = torch.randn(tokens, HEADS, HEAD_SIZE, generator=gen).to(dtype).to(device)
    full = torch.zeros_like(query)
    impl.forward(layer(), query, None, None, cache, metadata, full)
    for per_request in (1, 4, 9):
        rows = pick_rows(start_t, per_request, tokens)
        attend = RowsAttention.build(impl, metadata, rows, HEADS, dtype)
        assert attend is not None
        got = attend(layer(), query[rows.index].reshape(-1, HEADS * HEAD_SIZE), cache).view(
            -1, HEADS, HEAD_SIZE
        )
        valid = rows.target < tokens
        # every request's own last min(query, per_request) rows are kept, and only those
        own = [e - 1 - j for s, e in itertools.pairwise(starts) for j in range(min(e - s, per_request))]
        assert sorted(rows.target[valid].tolist()) == sorted(own)
        torch.testing.assert_close(got[valid], full[rows.index[valid]], rtol=tolerance, atol=tolerance)
        assert torch.equal(got[~valid], torch.zeros_like(got[~valid]))  # filler: not attended from


def cpu_attention_ops() -> bool:
    """vLLM's CPU build registers its attention ops; the CUDA build (the GPU host) does not."""
    return hasattr(torch.ops._C, "get_scheduler_metadata")


needs_cpu_build = pytest.mark.skipif(
    torch.cuda.is_available() and not cpu_attention_ops(), reason="CPU_ATTN: needs vLLM's CPU build"
)


@needs_cpu_build
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rows_attention_equals_full_attention_on_cpu_attn(dtype: torch.dtype) -> None:
    check_rows_attention("cpu", dtype, "cpu", 0.0 if dtype == torch.float32 else 1e-2)


@pytest.mark.cuda
@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="FlashAttention: needs a CUDA GPU (not counted on CPU)"
)
def test_rows_attention_equals_full_attention_on_flash_attention() -> None:
    check_rows_attention("flash", torch.bfloat16, "cuda", 1e-2)


@needs_cpu_build
def test_unsupported_backends_and_metadata_get_the_generic_path() -> None:
    rows = pick_rows(torch.tensor([0, 3]), 1, 3)
    other = types.SimpleNamespace(kv_cache_dtype="auto")
    assert RowsAttention.build(other, types.SimpleNamespace(), rows, HEADS, torch.float32) is None
    impl, build_metadata = cpu_backend(torch.float32)
    metadata = build_metadata(
        torch.tensor([0, 3], dtype=torch.int32),
        torch.tensor([3], dtype=torch.int32),
        torch.zeros(1, 1, dtype=torch.int32),
        3,
    )
    assert RowsAttention.build(impl, metadata, rows, HEADS, torch.float32) is not None
    impl.kv_cache_dtype = "fp8"  # a quantized cache: not rebuilt
    assert RowsAttention.build(impl, metadata, rows, HEADS, torch.float32) is None


def test_flash_attention_metadata_from_a_single_rank_is_rebuilt_and_dcp_is_not() -> None:
    """The FlashAttention metadata vLLM 0.26 builds on one GPU (``max_dcp_context_kv_len`` 0, not
    None) takes the kept-rows path; with decode context parallelism it keeps the generic path. On
    the H200 a check on ``max_dcp_context_kv_len is None`` sent every saving step to the generic
    path (``swiftkv-8b-20261203T210332Z``: ``saving_paths == {"generic": 175}``)."""
    impl, build_metadata = flash_backend(torch.bfloat16)
    rows = pick_rows(torch.tensor([0, 3]), 1, 3)
    metadata = build_metadata(
        torch.tensor([0, 3], dtype=torch.int32),
        torch.tensor([3], dtype=torch.int32),
        torch.zeros(1, 1, dtype=torch.int32),
        3,
    )
    attend = RowsAttention.build(impl, metadata, rows, HEADS, torch.bfloat16)
    assert attend is not None
    assert attend.metadata.num_actual_tokens == 1 and attend.metadata.max_query_len == 1
    assert attend.metadata.query_start_loc.tolist() == [0, 1]
    impl.dcp_world_size = 2  # the cache split across two ranks: not rebuilt
    assert RowsAttention.build(impl, metadata, rows, HEADS, torch.bfloat16) is None
