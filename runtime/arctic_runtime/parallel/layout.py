"""Ulysses and Shift Parallelism: the rank layout and head bookkeeping, as pure functions.

An engine with tensor size ``TP`` and Ulysses size ``SP`` runs ``P = TP x SP`` ranks. vLLM itself is
started with tensor parallelism over all P ranks (``--tensor-parallel-size`` widened by the plugin),
so its own tensor group is the *full* group of P consecutive ranks, and the model vLLM builds there
is the shift model (every weight sharded P ways). Inside each full group, rank ``r`` has the
coordinates ``t = r // SP`` (its tensor rank in Ulysses mode) and ``s = r % SP`` (its sequence
rank):

* the **Ulysses tensor groups** take one rank of every SP block, ``[s, SP + s, 2 SP + s, ...]``:
  the Ulysses model's weights are sharded TP ways over them (and replicated over SP);
* the **sequence groups** are the SP consecutive ranks of one block, ``[t SP, ..., t SP + SP - 1]``:
  they split a step's tokens and exchange attention heads by all-to-all.

After the all-to-all, rank ``(t, s)`` holds the query heads ``s`` of its tensor shard ``t``, that is
the global head slice ``t SP + s = r``: exactly the slice rank ``r`` holds in full tensor
parallelism. The same holds for the KV heads (vLLM replicates a KV head over ``P / kv`` ranks when
there are fewer KV heads than ranks), so **both modes read and write the same KV cache heads on
every rank**: one cache, no copy and no re-layout when a step switches modes.

Nothing here imports torch or vLLM; ``arctic_runtime.parallel.ulysses`` does the tensor work.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RankGroups:
    """Every group of one kind across the world, as global rank lists (all ranks create all
    groups in the same order: process-group creation is collective)."""

    full: list[list[int]]
    """Full tensor groups: P consecutive ranks each (vLLM's own tensor groups)."""
    tensor: list[list[int]]
    """Ulysses tensor groups: TP ranks each, strided by SP inside a full group."""
    sequence: list[list[int]]
    """Sequence (Ulysses) groups: SP consecutive ranks each."""


def rank_groups(world_size: int, tp: int, sp: int) -> RankGroups:
    """The groups of a world made of ``world_size / (tp * sp)`` engines' full groups side by side."""
    size = tp * sp
    if tp < 1 or sp < 1 or world_size < size or world_size % size:
        raise ValueError(f"world size {world_size} is not a multiple of tensor {tp} x ulysses {sp}")
    full = [list(range(base, base + size)) for base in range(0, world_size, size)]
    tensor = [[g[t * sp + s] for t in range(tp)] for g in full for s in range(sp)]
    sequence = [[g[t * sp + s] for s in range(sp)] for g in full for t in range(tp)]
    return RankGroups(full=full, tensor=tensor, sequence=sequence)


def coordinates(rank_in_full: int, sp: int) -> tuple[int, int]:
    """(tensor rank in Ulysses mode, sequence rank) of a rank of the full group."""
    return divmod(rank_in_full, sp)


def kv_heads_of_rank(total_kv_heads: int, size: int, rank: int) -> list[int]:
    """The KV heads (global indices) rank ``rank`` of a tensor group of ``size`` holds, as vLLM
    shards them: ``kv / size`` consecutive heads each, or, with fewer heads than ranks, head
    ``rank // (size / kv)`` replicated on ``size / kv`` ranks."""
    if total_kv_heads >= size:
        per = total_kv_heads // size
        return list(range(rank * per, (rank + 1) * per))
    return [rank // (size // total_kv_heads)]


def kv_head_sources(total_kv_heads: int, tp: int, sp: int, t: int) -> list[list[int]]:
    """For the Ulysses all-to-all of tensor shard ``t``: for each destination sequence rank ``s``,
    the *local* KV heads (indices into this shard's KV heads) that rank ``(t, s)`` needs, which are
    the heads its full-tensor rank ``t * sp + s`` holds. With at least SP KV heads per shard this is
    a plain split; with fewer, heads are repeated (GQA)."""
    local = kv_heads_of_rank(total_kv_heads, tp, t)
    first = local[0]
    out = []
    for s in range(sp):
        needed = kv_heads_of_rank(total_kv_heads, tp * sp, t * sp + s)
        if not set(needed) <= set(local):
            raise ValueError(
                f"KV heads {needed} of rank {t * sp + s} are not in tensor shard {t} ({local}): "
                f"{total_kv_heads} KV heads cannot be laid out over tensor {tp} x ulysses {sp}"
            )
        out.append([h - first for h in needed])
    return out


def head_layout_errors(num_heads: int, num_kv_heads: int, tp: int, sp: int) -> list[str]:
    """Why ``num_heads`` query and ``num_kv_heads`` KV heads cannot run at tensor ``tp`` x ulysses
    ``sp`` (empty: they can). Rules: query heads divide by TP x SP (each rank attends over whole
    heads in both modes); KV heads divide by, or divide, both TP and TP x SP (vLLM's sharding,
    replicated when there are fewer KV heads than ranks)."""
    size = tp * sp
    errors = []
    if num_heads % size:
        errors.append(
            f"the model's {num_heads} attention heads must be divisible by tensor x ulysses = {size}"
        )
    for n, what in ((tp, "tensor"), (size, "tensor x ulysses")):
        if num_kv_heads % n and n % num_kv_heads:
            errors.append(f"the model's {num_kv_heads} KV heads must divide or be divisible by {what} = {n}")
    return errors


def padded_tokens(num_tokens: int, sp: int) -> tuple[int, int]:
    """(tokens padded to a multiple of SP, tokens per sequence rank). Each sequence rank takes one
    contiguous chunk; padding rows are computed and dropped, so any batch size works (no
    ``max_num_seqs % SP`` rule)."""
    chunk = -(-num_tokens // sp)
    return chunk * sp, chunk


def weight_bytes_per_gpu(total_bytes: int, tp: int, sp: int, shift: bool) -> tuple[int, int]:
    """(Ulysses model, shift model) weight bytes per GPU for a model of ``total_bytes``: W/TP for the
    Ulysses model (replicated over SP) and W/(TP x SP) for the shift model (0 without shift).
    Approximate: embeddings and norms are sharded like the rest or replicated; the engine reports
    the measured figure at start."""
    return total_bytes // tp, (total_bytes // (tp * sp) if shift else 0)
