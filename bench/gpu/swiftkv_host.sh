#!/usr/bin/env bash
# SwiftKV distillation of SmolLM2-135M on the GPU host (torch only: no vLLM bundle, no index).
# Prepared here by `python -m arctic_runtime.train.swiftkv prepare --out .gpu-swiftkv --gguf GGUF`.
# The packed weights (93 MB) exceed one command's 64 MiB, so they travel in two commands that must
# follow each other while the host stays warm (~30 s):
#   bash bench/gpu/swiftkv_host.sh stage    # carry .gpu-swiftkv/weights/part-0.bin: kept in /var/tmp
#   bash bench/gpu/swiftkv_host.sh run      # carry the rest of .gpu-swiftkv: generate, distil, evaluate
# Results (two safetensors files of the trained tensors, metrics.json, the log) go to $OUT.
set -euo pipefail
cd "$(dirname "$0")/../.."
keep=${SWIFTKV_WEIGHTS:-/var/tmp/swiftkv-weights}  # or the stage.sh tree: /var/tmp/stage/tree/.gpu-swiftkv/weights
case "${1:-}" in
  stage)
    mkdir -p "$keep"
    cp .gpu-swiftkv/weights/part-*.bin "$keep"/
    ls -la "$keep"
    ;;
  run)
    shift
    for f in "$keep"/part-*.bin; do
      [ -e "$f" ] || { echo "swiftkv_host.sh: $keep is empty: run 'stage' first on this same (warm) host"; exit 2; }
      [ -e ".gpu-swiftkv/weights/$(basename "$f")" ] || cp "$f" .gpu-swiftkv/weights/
    done
    nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader
    out=${OUT:-/tmp/swiftkv-out}
    mkdir -p "$out"
    # the one-launch Triton K/V cache write against its PyTorch reference (~20 s)
    PYTHONPATH=kernels:runtime timeout 120 python3 -m pytest -q -p no:cacheprovider --noconftest \
      tests/unit/test_swiftkv_cache.py > "$out/kernel-test.log" 2>&1 || true
    tail -3 "$out/kernel-test.log"
    PYTHONPATH=runtime:${PYTHONPATH:-} PYTHONUNBUFFERED=1 \
      python3 -m arctic_runtime.train.swiftkv run --data .gpu-swiftkv --out "$out" "$@" 2>&1 | tee "$out/train.log"
    ;;
  *)
    echo "usage: bash bench/gpu/swiftkv_host.sh stage|run [run options]"; exit 2 ;;
esac
