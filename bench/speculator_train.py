"""Turn what the GPU speculator run brought back into committed files:

    python -m bench.speculator_train --from /work/gpu-out/heads [--out bench/results]

``--from`` holds ``arctic_runtime.train.speculator run``'s output (lstm/, mlp/, metrics.json,
log.txt, traces-*.jsonl). Checks that both heads load (config + weights, tied to SmolLM2's
embedding), copies them to ``models/speculators/smollm2-135m-{lstm,mlp}/``, the held-out traces to
``bench/traces/heldout-{chat,code}.jsonl``, and writes ``bench/results/speculator-train-<time>.json``
(kind ``speculator-train``: the run's metrics, the head sizes, the log's tail).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models" / "speculators"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.speculator_train", description=__doc__.split("\n")[0])
    p.add_argument("--from", dest="src", required=True)
    p.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = p.parse_args(argv)
    src = Path(args.src)
    metrics: dict[str, Any] = json.loads((src / "metrics.json").read_text())
    from arctic_runtime.heads.config import read_head_config

    sizes = {}
    for kind in ("lstm", "mlp"):
        config = read_head_config(src / kind, key=f"{src / kind}")
        assert config.kind == kind and config.tie_base_embeddings, config
        dest = MODELS / f"smollm2-135m-{kind}"
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(src / kind, dest)
        sizes[kind] = (dest / "model.safetensors").stat().st_size
    for name in ("chat", "code"):
        trace = src / f"traces-{name}.jsonl"
        if trace.is_file():
            shutil.copy(trace, REPO / "bench" / "traces" / f"heldout-{name}.jsonl")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    log = (src / "log.txt").read_text().splitlines() if (src / "log.txt").is_file() else []
    result = {
        "suite": "speculator-train",
        "kind": "speculator-train",
        "description": "Draft heads (LSTM, MLP) trained for SmolLM2-135M-Instruct on its own greedy answers "
        "(arctic_runtime.train.speculator run on the GPU host); held-out acceptance by exact replay.",
        "created": stamp,
        "metrics": metrics,
        "head_bytes": sizes,
        "log_tail": log[-40:],
    }
    out = Path(args.out) / f"speculator-train-{stamp}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
