"""Ulysses attention across real processes (torch.distributed, gloo), without vLLM: each rank's
output must be the slice of full causal attention over all heads and tokens that rank owns, for
layouts with a plain KV head split and with KV heads repeated over the sequence ranks (GQA)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from arctic_runtime.parallel import layout, ulysses

HEAD = 8


class CausalAttention(torch.nn.Module):  # type: ignore[misc]  # torch is untyped here
    """A stand-in for vLLM's attention layer: causal GQA attention over all tokens of its heads."""

    def __init__(self, num_heads: int, num_kv_heads: int) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_size, self.layer_name = (
            num_heads,
            num_kv_heads,
            HEAD,
            "l0",
        )

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return attend(q, k, v, self.num_heads, self.num_kv_heads)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, kv_heads: int) -> torch.Tensor:
    n = q.shape[0]
    qh = q.view(n, heads, HEAD).transpose(0, 1)
    kh = k.view(n, kv_heads, HEAD).transpose(0, 1).repeat_interleave(heads // kv_heads, dim=0)
    vh = v.view(n, kv_heads, HEAD).transpose(0, 1).repeat_interleave(heads // kv_heads, dim=0)
    out = torch.nn.functional.scaled_dot_product_attention(qh, kh, vh, is_causal=True)
    return out.transpose(0, 1).reshape(n, heads * HEAD)


@dataclass
class Group:
    device_group: Any
    rank_in_group: int


def worker(
    rank: int, world: int, tp: int, sp: int, heads: int, kv: int, tokens: int, port: int, out: Any
) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    groups_of = layout.rank_groups(world, tp, sp)
    made = {}
    for kind in ("tensor", "sequence"):
        for ranks in getattr(groups_of, kind):
            handle = dist.new_group(ranks)  # collective: every rank creates every group
            if rank in ranks:
                made[kind] = Group(handle, ranks.index(rank))
    groups = ulysses.UlyssesGroups(full=None, tensor=made["tensor"], sequence=made["sequence"], tp=tp, sp=sp)
    t, s = layout.coordinates(rank, sp)
    # the same random step on every rank: all heads, all tokens
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(tokens, heads * HEAD, generator=gen)
    k = torch.randn(tokens, kv * HEAD, generator=gen)
    v = torch.randn(tokens, kv * HEAD, generator=gen)
    want = attend(q, k, v, heads, kv)
    # this rank's inputs in Ulysses mode: its tensor shard's heads, its chunk of the tokens
    q_shard = q.view(tokens, heads, HEAD)[:, t * heads // tp : (t + 1) * heads // tp].reshape(tokens, -1)
    local_kv = layout.kv_heads_of_rank(kv, tp, t)
    k_shard = k.view(tokens, kv, HEAD)[:, local_kv].reshape(tokens, -1)
    v_shard = v.view(tokens, kv, HEAD)[:, local_kv].reshape(tokens, -1)
    total, chunk = layout.padded_tokens(tokens, sp)

    def mine(x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x, x.new_zeros(total - tokens, x.shape[1])])
        return x[s * chunk : (s + 1) * chunk]

    inner_kv = max(1, len(local_kv) // sp) if len(local_kv) >= sp else 1
    wrapper = ulysses.UlyssesAttention(
        CausalAttention(heads // (tp * sp), inner_kv), groups, kv, torch.device("cpu")
    )
    ulysses._STEP.num_tokens = tokens
    got = wrapper(mine(q_shard), mine(k_shard), mine(v_shard))
    # this rank's rows of its tensor shard's heads
    expected = torch.cat([want, want.new_zeros(total - tokens, want.shape[1])])[s * chunk : (s + 1) * chunk]
    expected = expected.view(chunk, heads, HEAD)[:, t * heads // tp : (t + 1) * heads // tp].reshape(
        chunk, -1
    )
    out[rank] = float((got - expected).abs().max())
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.parametrize(
    ("tp", "sp", "heads", "kv", "tokens"),
    [
        (1, 2, 4, 2, 7),  # plain KV split, odd token count (padding)
        (1, 2, 4, 1, 6),  # one KV head repeated over both sequence ranks
        (2, 2, 8, 2, 9),  # one KV head per tensor shard, repeated over its sequence ranks
        (1, 4, 8, 4, 5),  # more sequence ranks than tokens per rank
    ],
)
def test_ulysses_attention_matches_full_attention(tp: int, sp: int, heads: int, kv: int, tokens: int) -> None:
    world = tp * sp
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(worker, args=(world, tp, sp, heads, kv, tokens, free_port(), out), nprocs=world)
        errors = dict(out)
    assert sorted(errors) == list(range(world))
    assert max(errors.values()) < 1e-5, errors
