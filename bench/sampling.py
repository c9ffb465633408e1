"""Does speculation change what sampling draws? ``python -m bench.sampling [--device gpu]``.

Speculative decoding is lossless only if the verifier (vLLM's rejection sampler) keeps the target
model's distribution whatever the drafts are. This draws ``--samples`` answers (default 200, one
request with ``n`` answers, temperature 1, ``--tokens`` tokens each) to a prompt the answers copy
from, so that drafts are made and verified, with the real SmolLM2, once per engine and seed:

* ``vanilla``: vLLM 0.26.0, no plugin, no speculation;
* ``suffix``: our suffix decoding (plugin on, ``method: suffix``);
* ``ngram``: vLLM's own n-gram drafts (the same verifier, drafts that are not ours).

Each engine runs in its own process (``--seeds``, default 0 and 1: two independent draws per
engine). Then, for every pair of runs, each answer position's token and the first three tokens
together go through a two-sample permutation test on the total variation distance (2,000
relabellings): a small p-value says the two runs do not draw from one distribution. Two runs of one
engine with different seeds calibrate the test: their p-values should look uniform.

Prints one JSON object and, with ``--out``, writes ``sampling-<device>-<time>.json`` (suite
``sampling``) for ``make bench-report``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import subprocess
import sys
from collections import Counter
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PROMPT = "Repeat after me: the cat sat on the mat. The cat sat on the mat. The cat sat on the mat."
SPECS: dict[str, dict[str, Any] | None] = {
    "vanilla": None,
    "suffix": {"method": "suffix", "num_speculative_tokens": 8, "suffix_decoding_max_tree_depth": 32},
    "ngram": {"method": "ngram", "num_speculative_tokens": 8, "prompt_lookup_max": 4, "prompt_lookup_min": 1},
}


def total_variation(a: Sequence[Hashable], b: Sequence[Hashable]) -> float:
    """Total variation distance between the empirical distributions of two samples."""
    ca, cb = Counter(a), Counter(b)
    return 0.5 * sum(abs(ca[k] / len(a) - cb[k] / len(b)) for k in ca.keys() | cb.keys())


def permutation_p(a: Sequence[Hashable], b: Sequence[Hashable], rounds: int = 2000, seed: int = 0) -> float:
    """Two-sample permutation test of "same distribution" on the total variation distance: the share
    of random relabellings of the pooled sample at least as far apart as the observed split (the
    smallest possible value is 1 / (rounds + 1))."""
    rng = random.Random(seed)
    observed = total_variation(a, b)
    pooled = list(a) + list(b)
    hits = 0
    for _ in range(rounds):
        rng.shuffle(pooled)
        hits += total_variation(pooled[: len(a)], pooled[len(a) :]) >= observed - 1e-12
    return (hits + 1) / (rounds + 1)


def _worker(engine: str, seed: int, samples: int, tokens: int, device: str) -> None:
    """One engine, one seed: print ``RESULT {"samples": [...], "spec": {...}}``."""
    from vllm import LLM, SamplingParams

    from arctic_runtime.models import ensure_smollm2

    args: dict[str, Any] = {"seed": seed, "max_model_len": 1024, "speculative_config": SPECS[engine]}
    if device == "cpu":  # the engine tests' CPU settings
        args.update(dtype="float32", enforce_eager=True, max_num_batched_tokens=512)
    else:
        args.update(gpu_memory_utilization=0.5, enforce_eager=True)  # starts in seconds; sampling is the same
    llm = LLM(str(ensure_smollm2()), disable_log_stats=False, **args)
    # no per-request seed: vLLM 0.26 on CPU cannot rewind a seeded generator after a chunked prefill
    params = SamplingParams(n=samples, max_tokens=tokens, temperature=1.0, ignore_eos=True)
    drawn = llm.generate([PROMPT], params)[0]
    spec: dict[str, int] = {}
    for metric in llm.get_metrics():  # the totals (counters), not the per-position vectors
        if metric.name.startswith("vllm:spec_decode_num") and hasattr(metric, "value"):
            name = metric.name.split(":")[1]
            spec[name] = spec.get(name, 0) + int(metric.value)
    print(
        "RESULT " + json.dumps({"samples": [list(c.token_ids) for c in drawn.outputs], "spec": spec}),
        flush=True,
    )


def _run(engine: str, seed: int, samples: int, tokens: int, device: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARCTIC_SERVE_", "VLLM_PLUGINS"))}
    env.update({"HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1"})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    if device == "cpu":
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    plugin = engine == "suffix"  # ngram and vanilla: vLLM alone
    env.update(
        {"VLLM_PLUGINS": "arctic_serve" if plugin else "", "ARCTIC_SERVE_ENABLED": "1" if plugin else "0"}
    )
    cmd = [sys.executable, "-m", "bench.sampling", "--worker", engine, "--seed", str(seed)]
    cmd += ["--samples", str(samples), "--tokens", str(tokens), "--device", device]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{engine} (seed {seed}) failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    return result


def compare(runs: dict[str, list[list[int]]], tokens: int) -> list[dict[str, Any]]:
    """Permutation p-values for every pair of runs: per answer position, and the first 3 tokens."""
    names = sorted(runs)
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            per_position = [
                permutation_p([s[k] for s in runs[a]], [s[k] for s in runs[b]]) for k in range(tokens)
            ]
            joint = permutation_p([tuple(s[:3]) for s in runs[a]], [tuple(s[:3]) for s in runs[b]])
            rows.append({"a": a, "b": b, "p_per_position": per_position, "p_first3": joint})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sampling", description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--engines", default="vanilla,suffix,ngram")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=6)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args.worker, args.seed, args.samples, args.tokens, args.device)
        return 0
    runs: dict[str, list[list[int]]] = {}
    spec: dict[str, dict[str, int]] = {}
    for engine in args.engines.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            result = _run(engine, seed, args.samples, args.tokens, args.device)
            runs[f"{engine}-{seed}"] = result["samples"]
            spec[f"{engine}-{seed}"] = result["spec"]
            print(f"bench: sampling: {engine} seed {seed} done", file=sys.stderr)
    now = dt.datetime.now(dt.UTC)
    report = {
        "suite": "sampling",
        "kind": "sampling",
        "description": "Answers sampled at temperature 1 with and without speculation (real SmolLM2, one "
        f"prompt, {args.samples} answers of {args.tokens} tokens per run): permutation p-values of "
        "'same distribution' for every pair of runs: python -m bench.sampling",
        "created": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "environment": {
            "device": args.device,
            "python": platform.python_version(),
            "host": os.environ.get("ARCTIC_BENCH_HOST"),
            "commit": os.environ.get("ARCTIC_BENCH_COMMIT"),
        },
        "prompt": PROMPT,
        "specs": {e: SPECS[e] for e in args.engines.split(",")},
        "spec_counters": spec,
        "comparisons": compare(runs, args.tokens),
        "samples": runs,
    }
    print(json.dumps({k: report[k] for k in ("spec_counters", "comparisons")}))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / f"sampling-{args.device}-{now.strftime('%Y%m%dT%H%M%SZ')}.json"
        path.write_text(json.dumps(report, indent=1) + "\n")
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
