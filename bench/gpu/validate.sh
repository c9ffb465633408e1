#!/usr/bin/env bash
# The control simulator against one real engine on the H200 (issue 16, "Credibility"), one device
# command of at most ~9 minutes:
#   bash bench/gpu/validate.sh            (after the vLLM bundle's last part: see bench/gpu/README.md)
# Starts one vLLM OpenAI server with our plugin (Llama-3.1-8B shape, dummy weights, CUDA graphs; k = 3
# drafts per request per step with vLLM's synthetic acceptance at the suffix traces' mean), probes
# its step times through the server (~50 s: closed batches of 1-256 requests drafting and not, at
# 128- and 1,024-token prompts, and the prefill's TTFT at 512-4,000 prompt tokens per step), writes
# that served calibration (control-served-<time>.json), then replays a segment of steady, bursty and
# diurnal at the load the probe says one replica sustains (32 running at the peak) against it open
# loop with the operator's cap controller in the loop (scrape every 5 s, caps through the admin API),
# and compares TTFT/TPOT p50/p95 with the simulator's prediction for one replica from the same
# probe (bench/control_validate.py). With the control-h200 files in bench/results it also predicts
# from them (--compare: the offline engine's calibration, beside). Segments (90 s each by default)
# shrink to fit the budget: ~45 s after a cold start (~260 s on a fresh host), 90 s after a warm one
# (~90 s). Both JSON files go to $OUT (the validation file is rewritten after each trace).
# VALIDATE_ARGS passes more options, e.g. "--running-target 96 --traces steady,bursty" for a load at
# the knee (a queue forms), which the default load (32 running at the peak) stays below.
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
compare=""
if ls bench/results/control-h200-*.json >/dev/null 2>&1; then compare="--compare"; fi
left=$(( budget - ($(date +%s) - started) ))
# 15 s kept for the interpreter's exit and the copy; the tool fits its segments into the rest
timeout --signal=INT "$left" python3 -m bench.control_validate --device gpu --calibration served $compare \
  --segment-s "${VALIDATE_SEGMENT_S:-90}" --budget-s $(( left - 15 )) --out "$out" ${VALIDATE_ARGS:-} 2>&1 \
  | grep -E '^control_validate|Error|error' || true
python3 - "$out" <<'PY'
import glob, json, sys
for f in sorted(glob.glob(sys.argv[1] + "/control-served-*.json")):
    d = json.load(open(f))
    print(f, "probe", d["probe"]["seconds"], "s; served calibration", json.dumps(d["calibration"]))
for f in sorted(glob.glob(sys.argv[1] + "/control-validation-*.json")):
    d = json.load(open(f))
    print(f, "validation", d["validation"], "calibration", d["setting"]["calibration"], "start", d["setting"]["engine_start_s"], "s")
    for t in d["traces"]:
        print(" ", t["trace"], t["requests"], "requests, failed", t["failed"], "within", t["within_15pct"])
        print("    measured ", t["measured"])
        print("    predicted", t["predicted"], t["ratio"])
        if "predicted_h200" in t:
            print("    h200     ", t["predicted_h200"], t["ratio_h200"])
        for b in t.get("by_arrival", []):
            print("    from", b["from_s"], "s:", b["requests"], "requests; measured", b["measured"], "predicted", b["predicted"])
        print("    controller", t.get("controller"), "accepted/draft", t.get("measured_accepted_per_draft"))
PY
echo "validate: $(( $(date +%s) - started )) s"
