#!/usr/bin/env bash
# The control simulator's H200 calibration (issue 16), one device command of at most ~9 minutes:
#   bash bench/gpu/calibrate.sh            (after the vLLM bundle's last part: see bench/gpu/README.md)
# Runs the control-h200 suite (bench/suites.py; Llama-3.1-8B shape, dummy weights, CUDA graphs) in two
# parts so that a cut-off second part keeps the first: (1) vanilla + verify-k3: decode step time at
# batch 1-256, the verify cost of 3-token drafts, the TTFT of a 2048-token prompt, and the first engine
# start as the host has it (cold on a fresh host: torch.compile + CUDA graphs); (2) verify-k1 +
# vanilla-restart: the verify cost of 1-token drafts and a start with the compile caches warm (what
# spec.compileCache gives a new replica). Result files go to $OUT; turn them into the chart's cost
# data and the simulator's calibration with
#   python -m bench.control --calibration h200 --write-costs charts/arctic-serve/files/cost/h200-llama-3.1-8b.json
#   python -m bench.control --calibration h200 --plot docs/img/control-latency.png
set -euo pipefail
cd "$(dirname "$0")/../.."
budget=${CALIBRATE_BUDGET_S:-530}   # the whole command's seconds (the device allows 600)
started=$(date +%s)
source /var/tmp/gpu-bundle/env.sh
out=${OUT:-bench/results}
mkdir -p "$out"
site=/var/tmp/arctic-site
rm -rf "$site"
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target "$site" . 2>&1 | grep -v WARNING || true
export PYTHONPATH=$site:$PYTHONPATH
export VLLM_CACHE_ROOT=${VLLM_CACHE_ROOT:-/var/tmp/vllm-cache}   # kept while the host stays warm
if [ -d "$VLLM_CACHE_ROOT" ]; then echo "calibrate: compile caches present in $VLLM_CACHE_ROOT (first start is warm)"; else echo "calibrate: no compile caches yet (first start is cold)"; fi
nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv,noheader
part() {
  local engines=$1 left=$(( budget - ($(date +%s) - started) ))
  if [ "$left" -lt 120 ]; then echo "calibrate: skipping $engines ($left s left)"; return 0; fi
  echo "calibrate: $engines (up to $left s)"
  timeout --signal=INT "$left" python3 -m bench run --suite control-h200 --engines "$engines" --out bench/results 2>&1 \
    | grep -E '^bench:|Error|error' | grep -v '^$' || true
  cp bench/results/control-h200-*.json "$out"/ 2>/dev/null || true
}
part vanilla,verify-k3
part verify-k1,vanilla-restart
python3 - "$out" <<'PY'
import glob, json, sys
for f in sorted(glob.glob(sys.argv[1] + "/control-h200-*.json")):
    d = json.load(open(f))
    print(f, f"{d.get('duration_s', 0):.0f}s")
    for e, r in d.get("engines", {}).items():
        c = r.get("cases", {})
        print(" ", e, "start", round(r.get("start_s", 0)), "s", r.get("error", "")[:200],
              {k: round(v.get("tpot_ms", {}).get("median", 0), 3) for k, v in c.items()},
              "prefill-2048 ttft_ms", c.get("prefill-2048", {}).get("ttft_ms", {}).get("median"))
PY
echo "calibrate: $(( $(date +%s) - started )) s"
