#!/usr/bin/env bash
# Train the SmolLM2-135M draft heads (LSTM + MLP) on the GPU host: issue 14's recipe,
# arctic_runtime.train.speculator (its docstring has the recipe). Run from the repository root.
#
# The packed weights are two parts of ~48 and ~44 MiB (python -m arctic_runtime.train.speculator
# prepare --out .gpu-heads ... writes .gpu-heads/w0, w1 and data); one device call carries 64 MiB,
# so the first part is staged by an earlier call on the same warm machine:
#   call 1, carry .gpu-heads/w0:                 mkdir -p /var/tmp/hw && cp .gpu-heads/w0/* /var/tmp/hw/
#   call 2, carry .gpu-heads/w1 .gpu-heads/data: bash bench/gpu/heads_host.sh
# Writes lstm/, mlp/, metrics.json, log.txt, traces-{chat,code}.jsonl under $OUT (~8 min).
set -euo pipefail
WEIGHTS=${WEIGHTS:-/var/tmp/hw}
mkdir -p "$WEIGHTS"
if [ -d .gpu-heads/w1 ]; then cp .gpu-heads/w1/* "$WEIGHTS"/; fi
for f in index.json part-0.bin part-1.bin; do
    if [ ! -f "$WEIGHTS/$f" ]; then
        echo "heads_host: $WEIGHTS/$f is missing (stage .gpu-heads/w0 with an earlier call)" >&2
        exit 2
    fi
done
export PYTHONPATH=$PWD/runtime:$PWD/kernels PYTHONUNBUFFERED=1
python3 -m arctic_runtime.train.speculator run --data .gpu-heads/data --weights "$WEIGHTS" --out "${OUT:?}" "$@"
