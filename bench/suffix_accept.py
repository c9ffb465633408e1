"""Suffix decoding, ours vs Arctic Inference's, on traces of real outputs: ``make bench-suffix``.

    python -m bench.suffix_accept [--traces bench/traces] [--out bench/results]

Replays every trace (``bench/suffix_traces.py`` made them from SmolLM2's real answers) through the
simulator (``arctic_runtime.suffix.sim``: draft, accept the longest correct prefix plus the model's
own token, feed back) with our cache and, when ``arctic_inference`` is importable, with Arctic
Inference's ``SuffixDecodingCache`` at the same settings, all in this one process so the timings
share a machine. Writes ``bench/results/suffix-accept-<time>.json`` (``ARCTIC_BENCH_HOST`` and
``ARCTIC_BENCH_COMMIT`` label the machine and the code). The per-step cost of a 64-request batch is
``bench/suffix_speed.py``'s.

Ratios are ours / Arctic: tokens per step above 1 means we accept more; microseconds below 1 means
we are cheaper.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from arctic_runtime.suffix.sim import arctic_available, load_trace, simulate, simulate_arctic
from arctic_runtime.suffix.tree import SuffixConfig

REPO = Path(__file__).resolve().parents[1]

#: Settings compared: our defaults, and vLLM's suffix defaults (tree depth 24); and our defaults
#: with drafts of at most 1, 3 and 5 tokens (the control simulator's acceptance by draft length,
#: paired with the verify cost of the same k).
CONFIGS = {
    "depth64-spec16": SuffixConfig(max_depth=64, max_spec_tokens=16, max_cached_requests=1000),
    "depth24-spec12": SuffixConfig(max_depth=24, max_spec_tokens=12, max_cached_requests=1000),
    **{
        f"depth64-spec{k}": SuffixConfig(max_depth=64, max_spec_tokens=k, max_cached_requests=1000)
        for k in (1, 3, 5)
    },
}


def _arctic_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("arctic_inference")
    except Exception:
        return None


def run(traces_dir: Path, out_dir: Path) -> Path:
    started = time.perf_counter()
    traces = sorted(traces_dir.glob("*.jsonl"))
    if not traces:
        raise SystemExit(
            f"bench: no *.jsonl traces in {traces_dir} (make them: python -m bench.suffix_traces)"
        )
    have_arctic = arctic_available()
    result: dict[str, Any] = {
        "suite": "suffix-accept",
        "kind": "suffix-accept",
        "description": "Suffix decoding on traces of SmolLM2's real answers: ours vs Arctic Inference "
        "(simulated engine loop, one process).",
        "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "environment": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpu": platform.processor() or None,
            "cpus": os.cpu_count(),
            "arctic_inference": _arctic_version() if have_arctic else None,
            "host": os.environ.get("ARCTIC_BENCH_HOST"),
            "commit": os.environ.get("ARCTIC_BENCH_COMMIT"),
        },
        "configs": {name: cfg.__dict__ for name, cfg in CONFIGS.items()},
        "traces": {},
    }
    for path in traces:
        requests = load_trace(path)
        rows: dict[str, Any] = {
            "requests": len(requests),
            "output_tokens": sum(len(r.output) for r in requests),
        }
        for name, config in CONFIGS.items():
            ours = simulate(requests, config)
            row: dict[str, Any] = {"ours": ours}
            if have_arctic:
                arctic = simulate_arctic(requests, config)
                row["arctic"] = arctic
                row["ratio_tokens_per_step"] = ours["tokens_per_step"] / arctic["tokens_per_step"]
                ours_us = ours["us_per_speculate"] + ours["us_per_update"]
                arctic_us = arctic["us_per_speculate"] + arctic["us_per_update"]
                row["ratio_us_per_step"] = ours_us / arctic_us if arctic_us else None
            rows[name] = row
            print(f"bench: suffix-accept {path.stem} {name}: {json.dumps(row)[:300]}", file=sys.stderr)
        result["traces"][path.stem] = rows
    result["duration_s"] = time.perf_counter() - started
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"suffix-accept-{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.suffix_accept")
    parser.add_argument("--traces", type=Path, default=REPO / "bench" / "traces")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)
    print(run(args.traces, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
