#!/usr/bin/env bash
# The control simulator against one real engine on the H200 (issue 16, "Credibility"), one device
# command of at most ~9 minutes:
#   bash bench/gpu/validate.sh            (after the vLLM bundle's last part: see bench/gpu/README.md)
# Starts one vLLM OpenAI server with our plugin (Llama-3.1-8B shape, dummy weights, CUDA graphs; k = 3
# drafts per request per step with vLLM's synthetic acceptance at the suffix traces' mean), probes its
# step times, then replays a segment of steady, bursty and diurnal against it open loop with the
# operator's cap controller in the loop (scrape every 5 s, caps through the admin API), and compares
# TTFT/TPOT p50/p95 with the simulator's prediction for one replica (bench/control_validate.py).
# The prediction uses the H200 calibration (control-h200-*.json from calibrate.sh, committed under
# bench/results); without those files it uses this run's probe. Segments (90 s each by default) shrink
# to fit the budget when the engine starts cold (~180 s instead of ~75 s). The result JSON
# (control-validation-<time>.json, rewritten after each trace) goes to $OUT.
set -euo pipefail
cd "$(dirname "$0")/../.."
budget=${VALIDATE_BUDGET_S:-540}   # the whole command's seconds (the device allows 600)
started=$(date +%s)
source /var/tmp/gpu-bundle/env.sh
out=${OUT:-bench/results}
mkdir -p "$out"
site=/var/tmp/arctic-site
rm -rf "$site"
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target "$site" . 2>&1 | grep -v WARNING || true
export PYTHONPATH=$site:$PYTHONPATH
export VLLM_CACHE_ROOT=${VLLM_CACHE_ROOT:-/var/tmp/vllm-cache}   # shared with calibrate.sh: warm if it ran on this host
if [ -d "$VLLM_CACHE_ROOT" ]; then echo "validate: compile caches present in $VLLM_CACHE_ROOT (warm start)"; else echo "validate: no compile caches yet (cold start)"; fi
nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv,noheader
calibration=h200
if ! ls bench/results/control-h200-*.json >/dev/null 2>&1; then
  echo "validate: no control-h200-*.json in bench/results: the prediction uses this run's probe"
  calibration=probe
fi
left=$(( budget - ($(date +%s) - started) ))
# 15 s kept for the interpreter's exit and the copy; the tool fits its segments into the rest
timeout --signal=INT "$left" python3 -m bench.control_validate --device gpu --calibration "$calibration" --probe \
  --segment-s "${VALIDATE_SEGMENT_S:-90}" --budget-s $(( left - 15 )) --out "$out" 2>&1 \
  | grep -E '^control_validate|Error|error' || true
python3 - "$out" <<'PY'
import glob, json, sys
for f in sorted(glob.glob(sys.argv[1] + "/control-validation-*.json")):
    d = json.load(open(f))
    print(f, "validation", d["validation"], "calibration", d["setting"]["calibration"], "start", d["setting"]["engine_start_s"], "s")
    for t in d["traces"]:
        print(" ", t["trace"], t["requests"], "requests, failed", t["failed"], "within", t["within_15pct"])
        print("    measured ", t["measured"])
        print("    predicted", t["predicted"], t["ratio"])
        if "predicted_probe" in t:
            print("    probe    ", t["predicted_probe"], t["ratio_probe"])
        print("    controller", t.get("controller"), "accepted/draft", t.get("measured_accepted_per_draft"))
PY
echo "validate: $(( $(date +%s) - started )) s"
