"""Acceptance of draft heads, suffix decoding and their hybrid on held-out real SmolLM2 answers:

    python -m bench.speculator_accept [--heads models/speculators] [--out bench/results]

Traces (``bench/traces``, real greedy answers of SmolLM2-135M-Instruct, none of them trained on):
``heldout-chat.jsonl`` (open questions from the held-out split of the training prompt sources),
``heldout-code.jsonl`` (continuations of held-out standard-library source), both written by the GPU
training run, and ``edit.jsonl`` (code-editing requests: repeated edits of the same functions, from
``bench.suffix_traces``). ``mixed`` is all three together.

Requests are split in two by the SHA-256 of their prompt (``part_of``): the hybrid's rule was
chosen on the ``dev`` part only; ``heldout`` is the result. Each part runs on its own (its own
suffix cache, its requests in trace order, so later ones see earlier answers of the same part).

Exact replay of the engine loop, one loop for every method: the prefill step emits the first answer
token; each later step drafts, accepts the longest prefix equal to the base model's greedy answer
and emits it plus one token of the base model's own (tokens per step = emitted / steps). The head
drafts at answer position j from the base model's final hidden state there (one teacher-forced
forward of this machine's PyTorch Llama over prompt + answer) and answer token j; suffix decoding
runs our ``SuffixDecodingCache`` (depth 64, up to 16 tokens). ``hybrid`` is the engine's rule, through
the engine's functions (``arctic_runtime.heads.engine.hybrid_source`` / ``hybrid_pick``): the suffix
draft when its score (expected accepted tokens) is at least ``DEFAULT_HYBRID_THRESHOLD`` (1.0),
continued by the head (suffix tokens forced) when shorter than ``n_predict``, else the head's draft.
``hybrid-arctic-rule`` is Arctic's rule through the same functions (threshold ``n_predict``).
``arctic-hybrid`` (Arctic Inference 0.3.0 loading the same weights) needs its CUDA build and vLLM;
the result says why it is absent here.

Writes ``bench/results/speculator-accept-<time>.json`` with rows
``{part, trace, method, head, tokens_per_step, accept_rate, steps, tokens, drafted, accepted, ...}``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TRACES = ("heldout-chat", "heldout-code", "edit")
PARTS = ("dev", "heldout")


def part_of(prompt: Sequence[int]) -> str:
    """``"dev"`` or ``"heldout"``: a request's part, from the SHA-256 of its prompt's token ids (fixed
    before any hybrid rule was tried). Rules are tuned on ``dev`` only; ``heldout`` is the result."""
    import hashlib

    digest = hashlib.sha256(",".join(str(int(t)) for t in prompt).encode()).digest()
    return "dev" if digest[0] % 2 == 0 else "heldout"


def arctic_status() -> str:
    import importlib

    try:
        importlib.import_module("arctic_inference")
    except ImportError as exc:
        return f"not installed ({exc}); its speculator path needs vLLM's CUDA build"
    return "installed, but its speculator needs CUDA (ArcticProposer runs in the GPU model runner)"


Draft = tuple[list[int], float]  # tokens, score


def display_path(path: Path) -> str:
    """``path`` relative to the repository when inside it (results name the heads they measured)."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def file_sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def replay(answer: Sequence[int], draft_at: Callable[[int], Sequence[int]]) -> tuple[int, int, int, int]:
    """(steps, drafted, accepted, emitted) over one answer; token 0 came from the prefill step. The
    engine loop is the training recipe's (``arctic_runtime.train.speculator.replay``): one home."""
    from arctic_runtime.train.speculator import replay as engine_replay

    steps, drafted, accepted = engine_replay(answer, draft_at)
    return steps, drafted, accepted, max(0, len(answer) - 1)


HeadSource = tuple[list[list[list[int]]], Any, Any, Any]  # drafts[r][j], head, hidden, tokens


def simulate(
    requests: Sequence[tuple[list[int], list[int]]],
    head: HeadSource | None,
    mode: str,
    threshold: float,
    make_cache: Callable[[], Any] | None,
) -> dict[str, int]:
    """One trace through one method: ``suffix``, ``head`` or ``hybrid``. The hybrid decides and
    assembles each draft with the engine's own functions (``arctic_runtime.heads.engine``:
    ``hybrid_source``, ``hybrid_pick``); a suffix draft it extends is continued by the head with
    the suffix tokens forced (``DraftHead.draft``'s ``prefix``), as in the engine."""
    import torch

    from arctic_runtime.heads.engine import forced_prefix, hybrid_pick, hybrid_source

    cache = make_cache() if make_cache is not None and mode != "head" else None
    total = {
        "steps": 0,
        "drafted": 0,
        "accepted": 0,
        "tokens": 0,
        "suffix_drafts": 0,
        "head_drafts": 0,
        "extended_drafts": 0,
    }
    for r, (prompt, answer) in enumerate(requests):
        known = 1  # answer tokens the cache holds
        if cache is not None:
            cache.start_request(r, prompt)
            cache.add_tokens(r, answer[:1])

        def draft_at(j: int, r: int = r, answer: list[int] = answer) -> list[int]:
            nonlocal known
            if cache is not None and known < j + 1:
                cache.add_tokens(r, answer[known : j + 1])
                known = j + 1
            if mode == "head":
                assert head is not None
                total["head_drafts"] += 1
                return list(head[0][r][j])
            assert cache is not None
            d = cache.speculate(r)
            if mode == "suffix":
                total["suffix_drafts"] += 1
                return list(d.token_ids)
            assert head is not None
            drafts, model, hidden, tokens = head
            k = model.config.n_predict
            source = hybrid_source(len(d.token_ids), float(d.score), k, threshold)
            head_draft: list[int] = []
            if source == "head":
                head_draft = list(drafts[r][j])
            elif source == "suffix+head":
                prefix = torch.tensor([forced_prefix(source, d.token_ids, k)])
                with torch.no_grad():
                    head_draft = model.draft(hidden[r, j][None].float(), tokens[r, j][None], k, prefix)[
                        0
                    ].tolist()
            total[
                {"suffix": "suffix_drafts", "suffix+head": "extended_drafts", "head": "head_drafts"}[source]
            ] += 1
            return hybrid_pick(source, list(d.token_ids), head_draft, k)

        steps, drafted, accepted, emitted = replay(answer, draft_at)
        if cache is not None:
            cache.stop_request(r)
        for key, value in (
            ("steps", steps),
            ("drafted", drafted),
            ("accepted", accepted),
            ("tokens", emitted),
        ):
            total[key] += value
    return total


def row(part: str, trace: str, method: str, head: str | None, t: dict[str, int]) -> dict[str, Any]:
    return {
        "part": part,
        "trace": trace,
        "method": method,
        "head": head,
        "tokens_per_step": round(t["tokens"] / max(1, t["steps"]), 4),
        "accept_rate": round(t["accepted"] / max(1, t["drafted"]), 4),
        **t,
    }


def add(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: a.get(k, 0) + b.get(k, 0) for k in set(a) | set(b)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.speculator_accept", description=__doc__.split("\n")[0])
    p.add_argument("--heads", default=str(REPO / "models" / "speculators"))
    p.add_argument("--traces", default=str(REPO / "bench" / "traces"))
    p.add_argument("--out", default=str(REPO / "bench" / "results"))
    p.add_argument("--max-requests", type=int, default=0, help="first N per trace, then split (0 = all)")
    args = p.parse_args(argv)
    import torch

    from arctic_runtime.heads.model import load_head
    from arctic_runtime.models import ensure_smollm2
    from arctic_runtime.suffix.sim import load_trace
    from arctic_runtime.suffix.tree import SuffixConfig, SuffixDecodingCache
    from arctic_runtime.train.llama import load_folder
    from arctic_runtime.train.speculator import all_position_drafts, hidden_table, teacher

    started = time.monotonic()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    config, state = load_folder(ensure_smollm2())
    model = teacher(config, state, "cpu", torch.float32)
    embedding = model.w("model.embed_tokens.weight")
    head_dirs = {kind: Path(args.heads) / f"smollm2-135m-{kind}" for kind in ("lstm", "mlp")}
    heads = {
        kind: load_head(folder, embedding, dtype=torch.float32)
        for kind, folder in head_dirs.items()
        if (folder / "config.json").is_file()
    }
    if not heads:
        raise SystemExit(f"bench: no trained heads under {args.heads} (python -m bench.speculator_train)")
    suffix_config = SuffixConfig(max_depth=64, max_spec_tokens=16, max_cached_requests=1000)

    def make_cache() -> Any:
        return SuffixDecodingCache(config=suffix_config)

    from arctic_runtime.heads.engine import DEFAULT_HYBRID_THRESHOLD

    rows: list[dict[str, Any]] = []
    traces_info: dict[str, dict[str, dict[str, int]]] = {}
    loaded: dict[str, list[tuple[list[int], list[int]]]] = {}
    for name in TRACES:
        path = Path(args.traces) / f"{name}.jsonl"
        if not path.is_file():
            raise SystemExit(
                f"bench: {path} is missing (held-out traces come from the GPU run: bench.speculator_train)"
            )
        reqs = [(list(r.prompt), list(r.output)) for r in load_trace(path)]
        if args.max_requests:
            reqs = reqs[: args.max_requests]
        loaded[name] = [(p_, a) for p_, a in reqs if len(a) >= 2]
    n_predict = max(h.config.n_predict for h in heads.values())
    for part in PARTS:
        mixed: dict[tuple[str, str | None], dict[str, int]] = {}
        for name in TRACES:
            reqs = [(p_, a) for p_, a in loaded[name] if part_of(p_) == part]
            traces_info.setdefault(part, {})[name] = {
                "requests": len(reqs),
                "output_tokens": sum(len(a) for _, a in reqs),
            }
            longest = max(len(a) for _, a in reqs)
            seqs = [(p_, a, name) for p_, a in reqs]
            hidden, tokens, _ = hidden_table(model, seqs, n_predict, longest, 8192, torch.float32)
            runs: list[tuple[str, str | None, dict[str, int]]] = [
                ("suffix", None, simulate(reqs, None, "suffix", 0.0, make_cache))
            ]
            for kind, head in heads.items():
                k = head.config.n_predict
                source = (all_position_drafts(head, hidden, tokens, k).tolist(), head, hidden, tokens)
                runs.append(("head", kind, simulate(reqs, source, "head", 0.0, make_cache)))
                runs.append(
                    ("hybrid", kind, simulate(reqs, source, "hybrid", DEFAULT_HYBRID_THRESHOLD, make_cache))
                )
                runs.append(
                    ("hybrid-arctic-rule", kind, simulate(reqs, source, "hybrid", float(k), make_cache))
                )
            for method, kind_, t in runs:
                rows.append(row(part, name, method, kind_, t))
                mixed[(method, kind_)] = add(mixed.get((method, kind_), {}), t)
            print(
                f"{part} {name}: {traces_info[part][name]} done at {time.monotonic() - started:.0f}s",
                flush=True,
            )
        for (method, head_kind), t in mixed.items():
            rows.append(row(part, "mixed", method, head_kind, t))
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    result = {
        "suite": "speculator-accept",
        "kind": "speculator-accept",
        "description": __doc__.split("\n")[0],
        "created": stamp,
        "environment": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
        },
        "traces": traces_info,
        "heads": {
            k: {
                "n_predict": h.config.n_predict,
                "kind": h.config.kind,
                "dir": display_path(head_dirs[k]),
                "sha256": file_sha256(head_dirs[k] / "model.safetensors"),
            }
            for k, h in heads.items()
        },
        "suffix_config": suffix_config.__dict__,
        "arctic_hybrid": arctic_status(),
        "hybrid_threshold": DEFAULT_HYBRID_THRESHOLD,
        "rows": rows,
        "seconds": round(time.monotonic() - started, 1),
    }
    out = Path(args.out) / f"speculator-accept-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    for r in rows:
        print(
            f"{r['part']:8s} {r['trace']:14s} {r['method']:18s} {r['head'] or '':5s} "
            f"{r['tokens_per_step']:.3f} {r['accept_rate']:.3f}"
        )
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
