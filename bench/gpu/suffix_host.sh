#!/usr/bin/env bash
# Suffix decoding on the GPU host's CPU, no vLLM needed (one short command): builds this checkout
# (with the native suffix backend) and Arctic Inference 0.3.0 from its sdist, then runs the
# simulator comparison on bench/traces and the per-step cost at batch 64 for each backend.
# Ship the sdist and nanobind wheel in .gpu-files/ (carry it):
#   pip download --no-deps --no-binary :all: --no-build-isolation arctic-inference==0.3.0 -d .gpu-files
#   pip download --no-deps nanobind==2.9.2 -d .gpu-files
# With a baseline (bash bench/gpu/suffix_host.sh .gpu-files/baseline-COMMIT.tar.gz, a tarball of an
# older checkout: git archive COMMIT runtime operator kernels bench setup.py pyproject.toml README.md),
# the per-step cost is measured for both, alternated four times per workload on the same host
# (python -m bench.suffix_ab: this checkout's bench against each side's runtime; an older
# SuffixDrafter is driven through its own per-row API).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-bench/results}
mkdir -p "$out"
site=/var/tmp/arctic-site
tools=/var/tmp/ai-tools
ai=/var/tmp/ai-site
python3 -m pip install -q --no-index --no-deps --target "$tools" .gpu-files/nanobind-*.whl
# nanobind binds our native suffix backend too (setup.py compiles its runtime into the extension)
rm -rf "$site" && PYTHONPATH=$tools python3 -m pip install -q --no-index --no-deps --no-build-isolation --target "$site" . 2>&1 | grep -v WARNING || true
rm -rf /var/tmp/ai-src && mkdir -p /var/tmp/ai-src && tar xzf .gpu-files/arctic_inference-0.3.0.tar.gz -C /var/tmp/ai-src
start=$(date +%s)
(cd /var/tmp/ai-src/arctic_inference-0.3.0 && PYTHONPATH=$tools python3 -m pip install -q --no-index --no-deps \
  --no-build-isolation --target "$ai" . > "$out/arctic-inference-build.log" 2>&1) \
  && echo "arctic-inference 0.3.0 built in $(( $(date +%s) - start )) s" \
  || { echo "arctic-inference build FAILED"; tail -20 "$out/arctic-inference-build.log"; }
export PYTHONPATH=$site:$ai:.
python3 -c "import platform; from arctic_runtime.suffix import SuffixDecodingCache as C; print('backend:', C().backend, platform.processor())"
lscpu | grep -E 'Model name|^CPU\(s\)' || true
# the code measured: ARCTIC_BENCH_COMMIT when given (a copied checkout's .git may lag behind it)
export ARCTIC_BENCH_COMMIT=${ARCTIC_BENCH_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || true)
export ARCTIC_BENCH_HOST="${gpu:-GPU} host CPU ($(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores, via the device tool)"
python3 -m bench.suffix_accept --out "$out" 2>/dev/null
# the native backend only: the Python one takes ~30 ms per step, minutes for the whole run
python3 -m bench.suffix_speed --backend native --out "$out" | tail -c 900
# the worst case: one token repeated, every 16-token draft accepted (what the dummy-weight suites see)
python3 -m bench.suffix_speed --backend native --workload repeat > "$out/suffix-speed-repeat.json" && tail -c 600 "$out/suffix-speed-repeat.json"
baseline=${1:-}
if [ -n "$baseline" ]; then
  base=/var/tmp/base-src
  rm -rf "$base" /var/tmp/base-site && mkdir -p "$base" && tar xzf "$baseline" -C "$base"
  (cd "$base" && python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /var/tmp/base-site . 2>&1 | grep -v WARNING || true)
  # this checkout's bench against each side's runtime, alternated (bench/suffix_ab.py); JSON in $out
  python3 -m bench.suffix_ab --baseline "$(basename "$baseline" .tar.gz)" --baseline-site /var/tmp/base-site \
    --head-site "$site" --rounds 4 --host "$ARCTIC_BENCH_HOST" --out "$out" | tail -4
fi
