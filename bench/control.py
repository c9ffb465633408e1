"""The control-loop simulator (issue 6, "Proving it works"): one service under a traffic trace,
driven by a replica policy and a speculation-cap policy, compared on TTFT, end-to-end latency and
GPU-seconds.

``python -m bench.control [--traces steady,bursty,diurnal] [--quick] [--seed N] [--out DIR]
[--plot PNG]`` writes ``DIR/control-<trace>.json`` (a JSON list of rows, one per policy, with the
issue's keys ``policy, trace, p50_ttft_s, p95_ttft_s, p95_e2e_s, gpu_seconds`` plus extras) and
``DIR/control-config.json`` (calibration, the files it came from, settings, commit).

Model (deterministic for a seed; pure Python; the whole comparison runs in seconds):

* Requests arrive as a Poisson process with a time-varying rate (``Trace``). Each has a prompt
  length, an output length (log-normal around 1000 in / 250 out) and an acceptance class: how many
  draft tokens a drafting step accepts on average, measured by our suffix decoding on real traces
  (``bench/results/suffix-accept-*.json``: edit, agent, chat-repeat; one third each).
* A replica is a continuous-batching engine (``Replica``) that builds its steps as vLLM 0.26's V1
  scheduler does: ``max_num_seqs`` slots, a FIFO queue, a token budget per step that the running
  requests take first (1 + drafts per decoding request, the next chunk of one still prefilling),
  and waiting requests admitted only while budget is left, each with a chunk of its prompt. One
  engine step takes the vanilla decode step time at the number of decoding requests b
  (interpolated from the calibration), times ``1 + (verify_cost(b) - 1) x drafting / b`` when some
  requests draft, plus the decoding requests' context tokens x ``kv_s_per_token`` (when the
  calibration measured it), plus the prefill time of the prompt tokens scheduled in that step.
  Only requests among the first soft-cap positions of the running queue draft, and nobody with
  hard-cap or more running (the runtime's caps); a drafting request gains
  ``1 + accepted`` tokens per step (fractional: the class mean), the others 1.
* Replicas start as pods: ready after the pod start overhead plus the measured engine start, and
  count GPU-seconds from creation. Scale-down cancels a loading pod first, else drains the least
  loaded ready one (no new requests; it counts until its running and queued requests finish).
  Requests go to the ready, non-draining replica with the fewest running + waiting requests.
* Policies (``POLICIES``): ``ours`` is the operator's ``decide_replicas`` + ``decide_cap`` on means
  over a 30 s window of 5 s scrapes, as the controller runs them; ``static-cap-N`` keeps our
  replica policy and fixes the soft cap at N (no hard cap), so that it isolates the cap;
  ``keda-waiting-5`` is KEDA's Prometheus trigger on the summed waiting requests with the HPA's
  default behaviour and the soft cap fixed at 64 (Arctic Inference's default), no hard cap;
  ``schedule-<name>`` is vLLM's Dynamic SD (draft length by running requests, no caps) on our
  replica policy. With ``--policies`` only: ``ours-draft-K`` is ours with every pod's drafts cut to
  K tokens (a per-pod draft length fixed in hindsight).

Engine time between events is fast-forwarded: while nothing changes in a replica's batch (no
admission, prefill or completion) its steps are identical, so an "epoch" of n steps is one update.
"""

from __future__ import annotations

import argparse
import datetime as dt
import heapq
import json
import math
import os
import random
import statistics
import subprocess
import sys
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from arctic_operator.api import (
    AutoscalingSpec,
    AutoscalingTargets,
    BurstSpec,
    CapControllerSpec,
    SpeculationSpec,
)
from arctic_operator.control.cap import CapPolicy
from arctic_operator.control.cost import DEFAULT_COSTS, VerifyCostModel, VerifyCosts, interpolate_log
from arctic_operator.control.loop import ControlLoop
from arctic_operator.control.metrics import PodSample, StepKey, StepTotals
from arctic_operator.control.replicas import ReplicaPolicy
from arctic_runtime.contract import decode_batch_bucket

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"

# --------------------------------------------------------------------------------------------
# Calibration: from the newest result file of each suite
# --------------------------------------------------------------------------------------------

VERIFY_KS = (1, 3, 5)
"""Draft lengths whose verify cost was measured (verify-8b runs with engines verify-k1/-k3/-k5)."""

SUFFIX_SETTING = "depth64-spec16"
"""The suffix-accept setting whose acceptance ``ours`` and the fixed caps use: our defaults (tree
depth 64, up to 16 tokens). Each class drafts ``mean_draft_len`` tokens per step on average, and a
step pays the verify cost measured at that draft length (interpolated between k = 1, 3, 5)."""

SCHEDULE_SETTINGS = {1: "depth64-spec1", 3: "depth64-spec3", 5: "depth64-spec5", 16: SUFFIX_SETTING}
"""Draft length cap k -> the suffix-accept setting measured with drafts of at most k tokens (the
Dynamic-SD schedules' acceptance)."""

CLASS_WEIGHTS: dict[str, float] = {"edit": 1 / 3, "agent": 1 / 3, "chat-repeat": 1 / 3}
"""Share of requests per acceptance class (bench/traces/<class>.jsonl): an even mix, by choice."""

POD_START_OVERHEAD_S = 60.0
"""Seconds from pod creation to the engine process starting: scheduling, image start (cached image)
and reading 16 GB of weights, which our start_s measurements do not include (they load dummy
weights). An assumption, not a measurement."""

COLD_ENGINE_START_S = 180.0
"""Seconds of an 8B engine's first start on a host without vLLM's compile caches (torch.compile and
CUDA graphs), on the H200: /work/shared/notes/gpu.md ("first 8B engine start on a fresh host ~180
s"). Without spec.compileCache every new pod starts cold. To be replaced by bench/gpu/calibrate.sh's
measurement."""

KV_CAPACITY_TOKENS = 440_000
"""KV-cache tokens per replica. Llama-3.1-8B keeps 2 x 32 layers x 8 KV heads x 128 x 2 bytes =
128 KiB per token; vLLM at gpu_memory_utilization 0.9 on an 80 GB H100 (81559 MiB) leaves
~77 GB - 16 GB weights - ~2 GB activations = ~59 GB for it: ~440k tokens."""


@dataclass(frozen=True)
class Calibration:
    """Per-replica timings (seconds) and acceptance, with the files they came from."""

    decode_batches: tuple[int, ...]
    """Decoding requests at which the vanilla step time was measured (increasing)."""
    decode_step_s: tuple[float, ...]
    """Seconds per engine step (= per output token of each request) at those batch sizes."""
    verify_batches: tuple[int, ...]
    verify_cost: dict[int, tuple[float, ...]]
    """Draft length k -> step time with k drafts per request (acceptance forced to 0) / vanilla of
    the same run, at verify_batches."""
    prefill_s_per_token: float
    engine_start_s: float
    """Median engine start (process start to ready) over the engines of the calibration runs: with
    the host's compile caches warm (each suite starts several engines of one shape)."""
    accepted_per_step: dict[str, float]
    """Acceptance class -> mean accepted draft tokens per drafting step (our default setting)."""
    draft_len: dict[str, float] = field(default_factory=dict)
    """Acceptance class -> mean draft tokens per step (our default setting)."""
    by_draft_cap: dict[int, dict[str, tuple[float, float]]] = field(default_factory=dict)
    """Draft length cap k -> class -> (accepted per step, draft tokens per step) with drafts of at
    most k tokens."""
    cold_engine_start_s: float = COLD_ENGINE_START_S
    sources: dict[str, str] = field(default_factory=dict)
    """What -> result file (or how it was derived)."""
    gpu: str = "H100"
    kv_capacity_tokens: int = KV_CAPACITY_TOKENS
    kv_s_per_token: float = 0.0
    """Seconds a decode step spends per KV-cache token of its decoding requests: attention reads
    every decoding request's whole context in every step, so a batch of 1,000-token contexts steps
    slower than the same batch of 150-token ones. 0: not modelled, and ``decode_step_s`` include
    the calibration runs' own contexts (128-token prompts, 64 outputs: ~130-190 tokens per request).
    The served probe (bench/control_validate.py) measures it from one batch size at two prompt
    lengths and takes it out of ``decode_step_s`` (which then hold a step at zero context)."""
    prefill_marginal: bool = False
    """True: ``prefill_s_per_token`` is a prompt token's marginal cost in a step (the slope of TTFT
    over the prompt tokens of one step, measured at several lengths), and a step that carries only
    prefill also pays the batch-1 decode step (the step's fixed cost: reading the weights, the
    launch). False: one long prompt's TTFT / its length, the fixed cost spread over its tokens."""
    request_overhead_s: float = 0.0
    """Seconds of a request's time to first token spent outside the engine's steps: its path through
    the OpenAI server (HTTP, the API process, the hand-over to the engine core and back). Added to
    every TTFT and end-to-end latency, as a client measures them. 0: not modelled (the offline
    calibrations time the engine alone)."""

    def costs(self) -> VerifyCosts:
        """The verify-cost curves, as the chart ships them for the operator."""
        steps = dict(zip(self.decode_batches, self.decode_step_s, strict=True))
        return VerifyCosts(
            batch_sizes=self.verify_batches,
            by_draft_len=tuple(sorted(self.verify_cost.items())),
            gpu=self.gpu,
            model_shape="llama-3.1-8b",
            source="; ".join(
                f"{what}: {self.sources[what]}"
                for what in ("verify_cost", "decode_step_s", "prefill_s_per_token")
                if what in self.sources
            ),
            decode_step_s=tuple(steps[b] for b in self.verify_batches),
            prefill_s_per_token=self.prefill_s_per_token,
        )


def newest(results_dir: Path, prefix: str) -> Path | None:
    """The newest ``<prefix>-<UTC timestamp>.json`` (names sort by time)."""
    files = sorted(results_dir.glob(f"{prefix}-[0-9]*.json"))
    return files[-1] if files else None


def _load(results_dir: Path, prefix: str, engine: str = "vanilla") -> tuple[Path, dict[str, Any]]:
    """The newest ``<prefix>-<time>.json`` whose run has ``engine`` and ``vanilla`` with results
    (a suite may be rerun for some engines only, e.g. ``verify-8b:vanilla,verify-k5``)."""
    if newest(results_dir, prefix) is None:
        raise FileNotFoundError(f"no {prefix}-<time>.json in {results_dir}: run `make bench SUITE={prefix}`")
    for path in sorted(results_dir.glob(f"{prefix}-[0-9]*.json"), reverse=True):
        data: dict[str, Any] = json.loads(path.read_text())
        engines = data.get("engines", {})
        if "engines" not in data or all("cases" in engines.get(e, {}) for e in {engine, "vanilla"}):
            return path, data
    raise FileNotFoundError(
        f"no {prefix}-<time>.json in {results_dir} has results for {engine} and vanilla: "
        f"run `make bench SUITE={prefix}`"
    )


def _latency_case(run: dict[str, Any], engine: str, name: str, metric: str) -> float:
    return float(run["engines"][engine]["cases"][name][metric]["median"])


def _latency_cases(run: dict[str, Any]) -> list[dict[str, Any]]:
    cases = (c for c in run["config"]["cases"] if c["kind"] == "latency")
    return sorted(cases, key=lambda c: c["num_prompts"])


def load_calibration(results_dir: Path = RESULTS) -> Calibration:
    """Read the newest verify-8b (per draft length), overhead-8b, throughput-8b and suffix-accept
    results."""
    verify_runs = {k: _load(results_dir, "verify-8b", f"verify-k{k}") for k in VERIFY_KS}
    overhead_path, overhead = _load(results_dir, "overhead-8b")
    throughput_path, throughput = _load(results_dir, "throughput-8b")
    accept_path, accept = _load(results_dir, "suffix-accept")

    base_path, base = verify_runs[3]
    batches, steps = [], []
    for case in _latency_cases(base):
        batches.append(int(case["num_prompts"]))
        steps.append(_latency_case(base, "vanilla", case["name"], "tpot_ms") / 1e3)
    verify_batches = tuple(batches)
    costs: dict[int, tuple[float, ...]] = {}
    for k, (_, run) in verify_runs.items():
        ratios = []
        for case in _latency_cases(run):
            drafted = _latency_case(run, f"verify-k{k}", case["name"], "tpot_ms")
            ratios.append(drafted / _latency_case(run, "vanilla", case["name"], "tpot_ms"))
        if tuple(int(c["num_prompts"]) for c in _latency_cases(run)) != verify_batches:
            raise ValueError(f"{verify_runs[k][0].name}: batch sizes differ from {base_path.name}")
        costs[k] = tuple(ratios)
    # The largest batch: the offline 256-request case, elapsed / output length (its prompts were
    # prefilled in the warm-up run, so nearly all of it is decode steps with ~1000-token contexts).
    big = next(c for c in overhead["config"]["cases"] if c["kind"] == "throughput")
    big_elapsed = float(overhead["engines"]["vanilla"]["cases"][big["name"]]["elapsed_s"]["median"])
    if big["num_prompts"] > batches[-1]:
        batches.append(int(big["num_prompts"]))
        steps.append(big_elapsed / big["output_len"])
    single = next(c for c in overhead["config"]["cases"] if c["kind"] == "latency")
    prefill = _latency_case(overhead, "vanilla", single["name"], "ttft_ms") / 1e3 / single["input_len"]
    starts = [
        float(res["start_s"])
        for run in (base, overhead, throughput)
        for res in run["engines"].values()
        if "start_s" in res
    ]
    traces = {t: rows for t, rows in accept["traces"].items() if t in CLASS_WEIGHTS}
    missing = set(CLASS_WEIGHTS) - set(traces)
    if missing:
        raise ValueError(f"{accept_path.name} has no traces {sorted(missing)}")

    def measured(setting: str) -> dict[str, tuple[float, float]]:
        out = {}
        for trace, rows in traces.items():
            if setting not in rows:
                raise ValueError(
                    f"{accept_path.name} has no setting {setting} (run python -m bench.suffix_accept)"
                )
            ours = rows[setting]["ours"]
            out[trace] = (float(ours["mean_accepted_per_step"]), float(ours["mean_draft_len"]))
        return out

    default = measured(SUFFIX_SETTING)
    verify_names = ", ".join(f"{path.name} (k={k})" for k, (path, _) in verify_runs.items())
    return Calibration(
        decode_batches=tuple(batches),
        decode_step_s=tuple(steps),
        verify_batches=verify_batches,
        verify_cost=costs,
        prefill_s_per_token=prefill,
        engine_start_s=statistics.median(starts),
        accepted_per_step={t: a for t, (a, _) in default.items()},
        draft_len={t: d for t, (_, d) in default.items()},
        by_draft_cap={k: measured(setting) for k, setting in SCHEDULE_SETTINGS.items()},
        sources={
            "decode_step_s": f"{base_path.name} vanilla tpot_ms (batch "
            f"{', '.join(map(str, verify_batches))}); "
            f"{overhead_path.name} vanilla {big['name']} elapsed_s / {big['output_len']} (batch "
            f"{big['num_prompts']})",
            "verify_cost": f"verify-k<k> tpot_ms / vanilla tpot_ms of the same run: {verify_names}",
            "prefill_s_per_token": f"{overhead_path.name} vanilla {single['name']} ttft_ms / "
            f"{single['input_len']}",
            "engine_start_s": f"median start_s of the engines in {base_path.name}, {overhead_path.name}, "
            f"{throughput_path.name}",
            "cold_engine_start_s": "H200, /work/shared/notes/gpu.md (first start on a fresh host); "
            "an estimate until bench/gpu/calibrate.sh measures it",
            "accepted_per_step": f"{accept_path.name} {SUFFIX_SETTING} ours mean_accepted_per_step",
            "draft_len": f"{accept_path.name} {SUFFIX_SETTING} ours mean_draft_len",
            "by_draft_cap": f"{accept_path.name} "
            + ", ".join(f"{s} (k={k})" for k, s in SCHEDULE_SETTINGS.items()),
        },
    )


DEFAULT_DRAFT_CAP = 16
"""Draft tokens per request per step at most, our suffix default (num_speculative_tokens)."""


@dataclass(frozen=True)
class Drafting:
    """One acceptance class drafting with at most k tokens: what a drafting step gains and costs."""

    accepted: float
    """Accepted draft tokens per drafting step."""
    draft_len: float
    """Draft tokens per drafting step (what the verify step carries)."""
    cost: VerifyCostModel
    """Verify-step cost at ``draft_len`` tokens per draft."""


DraftTable = dict[int, dict[str, Drafting]]
"""Draft length cap k -> class -> Drafting."""


def draft_table(cal: Calibration) -> DraftTable:
    costs = cal.costs()
    return {
        k: {klass: Drafting(a, d, costs.model_for(d)) for klass, (a, d) in rows.items()}
        for k, rows in cal.by_draft_cap.items()
    }


H200_KV_CAPACITY_TOKENS = 850_000
"""KV-cache tokens per H200 replica: 141 GB x 0.9 - 16 GB weights - ~2 GB activations = ~109 GB at
128 KiB per token (Llama-3.1-8B, bf16)."""


def _engine_runs(results_dir: Path, prefix: str) -> dict[str, tuple[Path, dict[str, Any]]]:
    """Engine -> (file, run) from the newest ``<prefix>-<time>.json`` that has it with cases."""
    found: dict[str, tuple[Path, dict[str, Any]]] = {}
    for path in sorted(results_dir.glob(f"{prefix}-[0-9]*.json"), reverse=True):
        run: dict[str, Any] = json.loads(path.read_text())
        for engine, result in run.get("engines", {}).items():
            if "cases" in result and engine not in found:
                found[engine] = (path, run)
    return found


H200_PREFILL_RUN = "swiftkv-8b-20261203T111317Z.json"
"""The swiftkv-8b run whose vanilla 2k-prompt TTFT gives the H200 calibration its prefill rate while
the control-h200 run's own prefill case is a prefix-cache hit. Pinned, not the newest such run, so
that a later swiftkv-8b result does not move every control result (it did: 2026-12-04's runs
changed the rate and a diurnal p95 ratio by half a point); change it with a recalibration."""


def _h200_prefill_s_per_token(results_dir: Path, base_path: Path, base: dict[str, Any]) -> tuple[float, str]:
    """Prefill seconds per prompt token on the H200, and where it came from: the control-h200 run's
    prefill case when that run had prefix caching off, else vanilla's 2k-prompt TTFT in the
    swiftkv-8b run ``H200_PREFILL_RUN`` (prefix caching off there). The first control-h200 runs
    (2026-12-03) had vLLM's default prefix caching on, and their prefill prompt was already cached by
    the case's warm-up: 10-20 ms for 2048 tokens, a cache hit, not a prefill."""
    if base["config"].get("engine_args", {}).get("enable_prefix_caching") is False:
        case = next(c for c in base["config"]["cases"] if c["name"].startswith("prefill-"))
        value = _latency_case(base, "vanilla", case["name"], "ttft_ms") / 1e3 / case["input_len"]
        return value, f"{base_path.name} vanilla {case['name']} ttft_ms / {case['input_len']}"
    path = results_dir / H200_PREFILL_RUN
    run: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    if "cases" not in run.get("engines", {}).get("vanilla", {}):
        raise FileNotFoundError(
            f"{base_path.name} measured prefill with prefix caching on (a cache hit), and "
            f"{H200_PREFILL_RUN} (bench.control.H200_PREFILL_RUN) is not in {results_dir} with a vanilla "
            "run to take the prefill from: rerun bench/gpu/calibrate.sh (the suite now turns prefix "
            "caching off)"
        )
    case = next(c for c in run["config"]["cases"] if c["name"] == "prompt-2k")
    value = _latency_case(run, "vanilla", case["name"], "ttft_ms") / 1e3 / case["input_len"]
    return value, (
        f"{path.name} vanilla {case['name']} ttft_ms / {case['input_len']} (prefix caching off; "
        f"{base_path.name}'s prefill case was a prefix-cache hit)"
    )


def load_calibration_h200(results_dir: Path = RESULTS) -> Calibration:
    """The control-h200 suite's files (bench/gpu/calibrate.sh): decode and verify step times at
    batch 1-256 (each verify engine against the vanilla engine of its own run), prefill, cold and
    warm engine starts; acceptance from suffix-accept as for the H100."""
    runs = _engine_runs(results_dir, "control-h200")
    needed = {"vanilla", "verify-k3"}
    if not needed <= set(runs):
        raise FileNotFoundError(
            f"no control-h200-<time>.json in {results_dir} with {sorted(needed - set(runs))}: "
            "run bench/gpu/calibrate.sh on the H200"
        )
    base_path, base = runs["vanilla"]
    batch_cases = sorted(
        (c for c in base["config"]["cases"] if c["name"].startswith("batch-")), key=lambda c: c["num_prompts"]
    )
    batches = tuple(int(c["num_prompts"]) for c in batch_cases)
    steps = tuple(_latency_case(base, "vanilla", c["name"], "tpot_ms") / 1e3 for c in batch_cases)
    costs: dict[int, tuple[float, ...]] = {}
    sources = []
    for k in VERIFY_KS:
        engine = f"verify-k{k}"
        if engine not in runs:
            continue
        path, run = runs[engine]
        reference = "vanilla" if "cases" in run["engines"].get("vanilla", {}) else "vanilla-restart"
        costs[k] = tuple(
            _latency_case(run, engine, c["name"], "tpot_ms")
            / _latency_case(run, reference, c["name"], "tpot_ms")
            for c in batch_cases
        )
        sources.append(f"{path.name} ({engine} / {reference})")
    prefill, prefill_source = _h200_prefill_s_per_token(results_dir, base_path, base)
    first_start = float(base["engines"]["vanilla"]["start_s"])
    warm_path, warm_run = runs.get("vanilla-restart", runs["vanilla"])
    warm_engine = "vanilla-restart" if "vanilla-restart" in runs else "vanilla"
    warm_start = float(warm_run["engines"][warm_engine]["start_s"])
    h100 = load_calibration(results_dir)
    return replace(
        h100,
        decode_batches=batches,
        decode_step_s=steps,
        verify_batches=batches,
        verify_cost=costs,
        prefill_s_per_token=prefill,
        engine_start_s=warm_start,
        cold_engine_start_s=max(first_start, warm_start),
        gpu="H200",
        kv_capacity_tokens=H200_KV_CAPACITY_TOKENS,
        sources={
            **h100.sources,
            "decode_step_s": f"{base_path.name} vanilla tpot_ms (batch {', '.join(map(str, batches))})",
            "verify_cost": "verify-k<k> tpot_ms / vanilla tpot_ms of the same run: " + ", ".join(sources),
            "prefill_s_per_token": prefill_source,
            "engine_start_s": f"{warm_path.name} {warm_engine} start_s (compile caches warm)",
            "cold_engine_start_s": f"{base_path.name} vanilla start_s (the run's first start: cold only on "
            "a fresh host; see calibrate.sh's log), at least the warm start",
        },
    )


SERVED_RUN = "control-served-20261203T211517Z.json"
"""The validation run whose probe of the served engine is the served calibration (the second run
of 2026-12-03, validated within 15 percent). Pinned, not the newest such file, so that a later
validation run (2026-12-04's at the knee wrote another probe) does not move every served result;
change it with a recalibration."""


def _served_file(results_dir: Path, run: str | None = None) -> tuple[Path, dict[str, Any]]:
    """The GPU ``control-served-<time>.json`` named ``run`` (default ``SERVED_RUN``; a CPU dry run's is
    not a calibration)."""
    run = run or SERVED_RUN
    path = results_dir / run
    data: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    if data.get("device") != "gpu":
        raise FileNotFoundError(
            f"{run} (bench.control.SERVED_RUN) is not a GPU control-served file in {results_dir}: run "
            "bench/gpu/validate.sh on the H200 (python -m bench.control_validate writes it from its probe "
            "of the served engine) and name its file"
        )
    return path, data


def load_calibration_served(results_dir: Path = RESULTS, run: str | None = None) -> Calibration:
    """The served engine's calibration (``control-served-<time>.json``: bench.control_validate's
    probe of the engine the operator deploys, through its OpenAI server, speculation configured):
    decode steps at zero context and the context's cost per KV token, the verify cost at the
    engine's k, the prefill's marginal cost per token and the request's path through the server.
    Acceptance as for the H100 (suffix-accept). Draft lengths the probe did not measure (the
    simulator's classes draft 1-4 tokens on average) take the served curve scaled by the offline
    H200 curves (control-h200) at each batch size: cost_k'(b) = 1 + (served_k(b) - 1) x
    (offline_k'(b) - 1) / (offline_k(b) - 1). Engine starts from the control-h200 files (a start
    with warm caches and the first one), else the validation run's start for both."""
    path, data = _served_file(results_dir, run)
    c = data["calibration"]
    batches = tuple(int(b) for b in c["decode_batches"])
    served_costs = {int(k): tuple(float(r) for r in v) for k, v in c["verify_cost"].items()}
    costs = dict(served_costs)
    h100 = load_calibration(results_dir)
    try:
        offline: Calibration | None = load_calibration_h200(results_dir)
    except FileNotFoundError:
        offline = None
    derived = []
    if offline is not None:
        k = min(served_costs)
        if k in offline.verify_cost:
            base = [interpolate_log(offline.verify_batches, offline.verify_cost[k], b) - 1 for b in batches]
            for other, curve in offline.verify_cost.items():
                if other in costs or any(x <= 0 for x in base):
                    continue
                scale = [
                    (interpolate_log(offline.verify_batches, curve, b) - 1) / x
                    for b, x in zip(batches, base, strict=True)
                ]
                costs[other] = tuple(1 + (s - 1) * f for s, f in zip(served_costs[k], scale, strict=True))
                derived.append(f"k={other} scaled from k={k} by the offline H200 curves")
    start = float(c["engine_start_s"])
    return replace(
        h100,
        decode_batches=batches,
        decode_step_s=tuple(float(s) for s in c["decode_step_s"]),
        verify_batches=batches,
        verify_cost=dict(sorted(costs.items())),
        prefill_s_per_token=float(c["prefill_s_per_token"]),
        engine_start_s=offline.engine_start_s if offline is not None else start,
        cold_engine_start_s=offline.cold_engine_start_s if offline is not None else start,
        gpu=str(c.get("gpu") or "H200"),
        kv_capacity_tokens=int(c["kv_capacity_tokens"]),
        kv_s_per_token=float(c["kv_s_per_token"]),
        prefill_marginal=bool(c["prefill_marginal"]),
        request_overhead_s=float(c["request_overhead_s"]),
        sources={
            **h100.sources,
            **{what: f"{path.name}: {how}" for what, how in data.get("sources", {}).items()},
            "verify_cost": f"{path.name}: served k={', '.join(map(str, served_costs))}"
            + (f"; {'; '.join(derived)}" if derived else ""),
            "engine_start_s": offline.sources["engine_start_s"] if offline is not None else f"{path.name}",
            "cold_engine_start_s": offline.sources["cold_engine_start_s"]
            if offline is not None
            else path.name,
        },
    )


def step_time_s(
    cal: Calibration, decoding: int, verify_extra: float, prefill_tokens: int, context_tokens: float = 0.0
) -> float:
    """One engine step: decode of ``decoding`` requests, ``verify_extra`` = the sum over drafting
    requests of (verify cost at their draft length - 1), plus the prefill of ``prefill_tokens``,
    plus ``context_tokens`` (the decoding requests' KV-cache tokens) x ``cal.kv_s_per_token``.
    Drafts scale the step's batch part only: the verify step reads each context once, as the plain
    step does. With ``cal.prefill_marginal`` a step without decoding requests pays the batch-1
    decode step for its prefill (the step's fixed cost)."""
    decode = 0.0
    if decoding > 0:
        decode = interpolate_log(cal.decode_batches, cal.decode_step_s, decoding)
        decode *= 1 + verify_extra / decoding
    elif prefill_tokens > 0 and cal.prefill_marginal:
        decode = interpolate_log(cal.decode_batches, cal.decode_step_s, 1)
    return decode + context_tokens * cal.kv_s_per_token + prefill_tokens * cal.prefill_s_per_token


Schedule = tuple[tuple[int, int], ...]
"""Dynamic SD (vLLM's num_speculative_tokens_per_batch_size): (up to this many running, draft at
most k tokens), increasing; above the last bound nobody drafts."""


def schedule_draft_cap(schedule: Schedule, running: int) -> int:
    for bound, k in schedule:
        if running <= bound:
            return k
    return 0


def drafting_slots(running: int, soft_cap: int | None, hard_cap: int | None) -> int:
    """How many of the first running requests (scheduler order) may draft under the runtime's caps."""
    if hard_cap is not None and running >= hard_cap:
        return 0
    return running if soft_cap is None else min(soft_cap, running)


# --------------------------------------------------------------------------------------------
# Traces and requests
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trace:
    """Arrival rate over time (requests per second)."""

    name: str
    kind: str
    """steady | bursty | diurnal"""
    duration_s: float
    base_rate: float
    peak_rate: float
    period_s: float = 0.0
    """bursty: one burst per period, at its end; diurnal: unused (one day = duration)."""
    burst_s: float = 0.0
    initial_replicas: int = 1
    """Replicas ready at time 0 (already running before the trace)."""

    def rate(self, t: float) -> float:
        if self.kind == "steady":
            return self.base_rate
        if self.kind == "bursty":
            in_burst = t % self.period_s >= self.period_s - self.burst_s
            return self.peak_rate if in_burst else self.base_rate
        if self.kind == "diurnal":
            phase = (1 - math.cos(2 * math.pi * t / self.duration_s)) / 2
            return self.base_rate + (self.peak_rate - self.base_rate) * phase
        raise ValueError(f"unknown trace kind {self.kind!r}")

    def scaled(self, factor: float) -> Trace:
        """The same shape in ``factor`` of the time (for --quick)."""
        return replace(
            self,
            duration_s=self.duration_s * factor,
            period_s=self.period_s * factor,
            burst_s=self.burst_s * factor,
        )


TRACES: dict[str, Trace] = {
    t.name: t
    for t in (
        # ~1.3 replicas' worth of load at one level: does a policy settle without flapping?
        Trace("steady", "steady", duration_s=1800, base_rate=25, peak_rate=25, initial_replicas=2),
        # 5 req/s with a 2-minute burst to 30 req/s every 10 minutes: shorter than a replica's start.
        Trace("bursty", "bursty", 1800, base_rate=5, peak_rate=30, period_s=600, burst_s=120),
        # A day compressed to an hour: 3 req/s at night, 40 req/s at noon.
        Trace("diurnal", "diurnal", 3600, base_rate=3, peak_rate=40),
    )
}

PROMPT_MEAN, PROMPT_SIGMA, PROMPT_RANGE = 1000.0, 0.5, (32, 3072)
"""Prompt tokens: log-normal with this mean and log-sigma, clipped (max_model_len 4096)."""
OUTPUT_MEAN, OUTPUT_SIGMA, OUTPUT_RANGE = 250.0, 0.5, (8, 1024)
"""Output tokens, likewise."""


@dataclass(frozen=True)
class Request:
    id: int
    arrival: float
    prompt_tokens: int
    output_tokens: int
    klass: str
    accepted_per_step: float


def _lognormal(rng: random.Random, mean: float, sigma: float, bounds: tuple[int, int]) -> int:
    value = rng.lognormvariate(math.log(mean) - sigma * sigma / 2, sigma)
    return max(bounds[0], min(bounds[1], round(value)))


def generate_requests(trace: Trace, cal: Calibration, seed: int) -> list[Request]:
    """Poisson arrivals at ``trace.rate(t)`` (thinning), each with lengths and an acceptance class."""
    rng = random.Random(f"{trace.name}/{seed}")
    peak = max(trace.base_rate, trace.peak_rate)
    classes, weights = list(CLASS_WEIGHTS), list(CLASS_WEIGHTS.values())
    requests: list[Request] = []
    t = 0.0
    while True:
        t += rng.expovariate(peak)
        if t >= trace.duration_s:
            return requests
        if rng.random() * peak > trace.rate(t):
            continue
        klass = rng.choices(classes, weights)[0]
        requests.append(
            Request(
                id=len(requests),
                arrival=t,
                prompt_tokens=_lognormal(rng, PROMPT_MEAN, PROMPT_SIGMA, PROMPT_RANGE),
                output_tokens=_lognormal(rng, OUTPUT_MEAN, OUTPUT_SIGMA, OUTPUT_RANGE),
                klass=klass,
                accepted_per_step=cal.accepted_per_step[klass],
            )
        )


# --------------------------------------------------------------------------------------------
# The engine: one replica
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineConfig:
    max_num_seqs: int = 256
    """Running requests per replica: the largest batch we measured (256 x 1024/256)."""
    max_num_batched_tokens: int = 8192
    """Tokens per step (decode + draft + prefill chunks): vLLM's chunked-prefill budget for the
    OpenAI server."""
    kv_capacity_tokens: int = KV_CAPACITY_TOKENS
    gpus_per_replica: int = 1
    """Llama-3.1-8B in bf16 fits one H100."""
    drafts_with_prefill: bool = True
    """vLLM's behaviour: a step that carries prefill chunks also verifies the decoding requests'
    drafts. False: a what-if (--what-if-prefill), a runtime that drops drafts in such steps (not
    implemented)."""


_EPS = 1e-6


@dataclass
class _Live:
    """A request inside a replica."""

    req: Request
    prefill_left: int
    tokens_left: float
    """Output tokens still to produce after the first (fractional: drafting gains the class mean)."""
    context: float = 0.0
    """Tokens in the KV cache."""
    first_token_at: float | None = None
    done_at: float | None = None


@dataclass(frozen=True)
class Sample:
    """What a scrape of one replica sees (vLLM gauges and counters)."""

    time: float
    running: int
    waiting: int
    kv_cache_usage: float
    drafts: float
    draft_tokens: float
    accepted: float
    soft_cap: int | None
    hard_cap: int | None
    prompt_tokens: float = 0.0
    """Counter: prompt tokens of the requests whose prefill finished."""
    requests_finished: float = 0.0
    """Counter: requests finished."""
    generation_tokens: float = 0.0
    """Counter: tokens generated by decode steps, accepted draft tokens included
    (vllm:generation_tokens_total)."""
    decode_steps: dict[StepKey, StepTotals] = field(default_factory=dict)
    """Counters: decode-only steps by (batch bucket, drafting), as the runtime's
    ``arctic_decode_step*`` series count them."""

    def pod_sample(self) -> PodSample:
        """As the operator's metrics parser would return it."""
        return PodSample(
            time=self.time,
            running=float(self.running),
            waiting=float(self.waiting),
            kv_cache_usage=self.kv_cache_usage,
            drafts=self.drafts,
            draft_tokens=self.draft_tokens,
            accepted_tokens=self.accepted,
            soft_cap=self.soft_cap,
            hard_cap=self.hard_cap,
            cap_reported=True,
            prompt_tokens=self.prompt_tokens,
            requests_finished=self.requests_finished,
            generation_tokens=self.generation_tokens,
            decode_steps=self.decode_steps,
        )


class Replica:
    """A continuous-batching engine; its steps run in epochs of identical steps."""

    def __init__(
        self,
        pod_id: int,
        created: float,
        ready_at: float,
        cal: Calibration,
        engine: EngineConfig,
        caps: tuple[int | None, int | None],
        table: DraftTable,
        schedule: Schedule | None = None,
    ) -> None:
        self.id = pod_id
        self.created = created
        self.ready_at = ready_at
        self.ready = ready_at <= created
        self.draining = False
        self.stopped_at: float | None = None
        self.cal, self.engine = cal, engine
        self.table = table
        self.schedule = schedule
        self.soft_cap, self.hard_cap = caps
        self.running: list[_Live] = []
        self.waiting: deque[_Live] = deque()
        self.kv_tokens = 0.0
        # counters, as of the start of the current epoch
        self.drafts = 0.0
        self.draft_tokens = 0.0
        self.accepted = 0.0
        self.decode_request_steps = 0.0
        self.drafting_request_steps = 0.0
        self.prompt_tokens = 0.0
        self.requests_finished = 0.0
        self.decode_steps: dict[StepKey, StepTotals] = {}
        # the current epoch: ``steps`` identical steps of ``step_s`` from ``epoch_start``
        self.busy = False
        self.epoch_start = 0.0
        self.step_s = 0.0
        self.steps = 0
        self.version = 0
        self._rates: list[float] = []
        self._chunks: list[int] = []
        self._decoding = 0
        self._drafting = 0
        self._accept_per_step = 0.0
        self._draft_tokens_per_step = 0.0
        self._tokens_per_step = 0.0
        self._decode_only = False
        self._slots_for: int | None = None
        """The running requests the current epoch's drafting slots were counted for (None: nobody
        could draft in it whatever the caps)."""

    @property
    def epoch_end(self) -> float:
        return self.epoch_start + self.steps * self.step_s

    @property
    def load(self) -> int:
        return len(self.running) + len(self.waiting)

    @property
    def active(self) -> bool:
        return self.stopped_at is None and not self.draining

    def head_fits(self, scheduled_tokens: int = 0) -> bool:
        """Whether the first waiting request may be admitted as far as slots and KV cache go: fewer
        than max_num_seqs run, and its whole prompt fits beside the KV cache in use and the
        ``scheduled_tokens`` this step already gives out (vLLM 0.26's admission with
        ``scheduler_reserve_full_isl``); an idle engine admits it whatever its size."""
        if not self.waiting or len(self.running) >= self.engine.max_num_seqs:
            return False
        need = self.kv_tokens + scheduled_tokens + self.waiting[0].prefill_left
        return not self.running or need <= self.engine.kv_capacity_tokens

    def plan(self, now: float) -> float | None:
        """Start an epoch at ``now`` as vLLM 0.26's V1 scheduler builds a step; its end, or None
        when idle. The token budget (max_num_batched_tokens) goes first to the running requests
        in their order: a decoding request takes 1 + its draft tokens, one still prefilling
        (admitted in an earlier step) its next chunk. Only then are waiting requests admitted,
        FIFO, while budget is left (``head_fits``): each with a chunk of its prompt in this very
        step. A request the budget cannot reach stays waiting, and counts as waiting in the
        scrapes, as vLLM's gauges count it. The caps apply to the running requests as the step
        starts (the runtime caps vLLM's running queue before the newly admitted join it)."""
        if not self.running and not self.waiting:
            self.busy = False
            return None
        running = len(self.running)
        slots = drafting_slots(running, self.soft_cap, self.hard_cap)
        forced_off = not self.engine.drafts_with_prefill and (
            any(live.prefill_left > 0 for live in self.running) or self.head_fits()
        )  # the runtime's carries_prefill: this step will carry prefill work
        draft_cap = DEFAULT_DRAFT_CAP
        if self.schedule is not None:
            draft_cap = schedule_draft_cap(self.schedule, running)
            forced_off = forced_off or draft_cap <= 0
        slots = 0 if forced_off else slots
        self._slots_for = None if forced_off else running
        classes = self.table.get(draft_cap, {})
        budget = self.engine.max_num_batched_tokens
        rates, chunks = [0.0] * running, [0] * running
        decoding = drafting = 0
        accept = draft_tokens = extra = context = 0.0
        prefilling: list[int] = []
        steps = sys.maxsize  # until the first completion
        for pos, live in enumerate(self.running):
            if live.prefill_left > 0:
                prefilling.append(pos)
                continue
            decoding += 1
            context += live.context
            rate = 1.0
            if pos < slots:
                draft = classes[live.req.klass]
                drafting += 1
                rate += draft.accepted
                accept += draft.accepted
                draft_tokens += draft.draft_len
                extra += draft.cost.cost(running) - 1
                budget -= math.ceil(draft.draft_len)
            budget -= 1
            rates[pos] = rate
            steps = min(steps, math.ceil(live.tokens_left / rate - 1e-9))
        prefill = 0
        for pos in prefilling:
            if budget <= 0:
                break
            chunks[pos] = min(self.running[pos].prefill_left, budget)
            budget -= chunks[pos]
            prefill += chunks[pos]
        while budget > 0 and self.head_fits(prefill):
            live = self.waiting.popleft()
            self.running.append(live)
            chunk = min(live.prefill_left, budget)
            rates.append(0.0)
            chunks.append(chunk)
            budget -= chunk
            prefill += chunk
        if not self.running:
            self.busy = False
            return None
        if prefill > 0:
            steps = 1  # the batch changes after this step
        self.busy = True
        self.epoch_start, self.steps = now, max(1, steps)
        self.step_s = step_time_s(self.cal, decoding, extra, prefill, context)
        self._rates, self._chunks = rates, chunks
        self._decoding, self._drafting = decoding, drafting
        self._decode_only = prefill == 0 and decoding > 0
        self._accept_per_step = accept
        self._draft_tokens_per_step = draft_tokens
        self._tokens_per_step = sum(rates)
        self.version += 1
        return self.epoch_end

    def caps_change_epoch(self, soft: int | None, hard: int | None) -> bool:
        """Whether caps ``soft``/``hard`` would let another number of requests draft in the current
        epoch than the caps it was planned with (else it runs on unchanged, as the engine's steps
        would: the new caps apply from the next step that counts them differently)."""
        if not self.busy or self._slots_for is None:
            return False
        before = drafting_slots(self._slots_for, self.soft_cap, self.hard_cap)
        return drafting_slots(self._slots_for, soft, hard) != before

    def cut(self, now: float) -> bool:
        """End the epoch at the first step boundary at or after ``now`` (an arrival or a cap change
        takes effect there). True if the epoch got shorter."""
        if not self.busy or now >= self.epoch_end:
            return False
        done = max(1, math.ceil((now - self.epoch_start) / self.step_s - 1e-9))
        if done >= self.steps:
            return False
        self.steps = done
        self.version += 1
        return True

    def finish_epoch(self) -> list[_Live]:
        """Credit the epoch's steps; the requests that finished (at ``epoch_end``)."""
        end, n = self.epoch_end, self.steps
        finished: list[_Live] = []
        keep: list[_Live] = []
        for live, rate, chunk in zip(self.running, self._rates, self._chunks, strict=True):
            if chunk > 0:
                live.prefill_left -= chunk
                live.context += chunk
                self.kv_tokens += chunk
                if live.prefill_left == 0:
                    live.first_token_at = end
                    self.prompt_tokens += live.req.prompt_tokens
                    live.context += 1
                    self.kv_tokens += 1
            elif rate > 0:
                gained = min(live.tokens_left, n * rate)
                live.tokens_left -= n * rate
                live.context += gained
                self.kv_tokens += gained
            if live.first_token_at is not None and live.tokens_left <= _EPS:
                live.done_at = end
                self.kv_tokens -= live.context
                self.requests_finished += 1
                finished.append(live)
            else:
                keep.append(live)
        self.running = keep
        self.drafts += n * self._drafting
        self.draft_tokens += n * self._draft_tokens_per_step
        self.accepted += n * self._accept_per_step
        self.decode_request_steps += n * self._decoding
        self.drafting_request_steps += n * self._drafting
        self.decode_steps = self._decode_steps_after(n)
        self.busy = False
        return finished

    def _decode_steps_after(self, steps: int) -> dict[StepKey, StepTotals]:
        """The decode-step counters once ``steps`` of the current epoch's steps are done: the
        runtime times decode-only steps by batch bucket and drafting (back-to-back steps: each
        takes the epoch's step time)."""
        if not (self._decode_only and steps > 0):
            return self.decode_steps
        key = (decode_batch_bucket(self._decoding), self._drafting > 0)
        totals = StepTotals(
            steps=1,
            seconds=self.step_s,
            requests=self._decoding,
            drafting=self._drafting,
            draft_tokens=self._draft_tokens_per_step,
        )
        return {**self.decode_steps, key: self.decode_steps.get(key, StepTotals()).plus(totals, steps)}

    def sample(self, now: float) -> Sample:
        """The metrics a scrape at ``now`` would read."""
        elapsed = 0
        if self.busy:
            elapsed = min(self.steps, math.floor((now - self.epoch_start) / self.step_s + 1e-9))
        kv = self.kv_tokens + elapsed * self._tokens_per_step if self.busy else self.kv_tokens
        return Sample(
            time=now,
            running=len(self.running),
            waiting=len(self.waiting),
            kv_cache_usage=min(1.0, kv / self.engine.kv_capacity_tokens),
            drafts=self.drafts + (elapsed * self._drafting if self.busy else 0),
            draft_tokens=self.draft_tokens + (elapsed * self._draft_tokens_per_step if self.busy else 0.0),
            accepted=self.accepted + (elapsed * self._accept_per_step if self.busy else 0.0),
            soft_cap=self.soft_cap,
            hard_cap=self.hard_cap,
            prompt_tokens=self.prompt_tokens,
            requests_finished=self.requests_finished,
            generation_tokens=self.decode_request_steps
            + self.accepted
            + (elapsed * (self._decoding + self._accept_per_step) if self.busy else 0.0),
            decode_steps=self._decode_steps_after(elapsed) if self.busy else self.decode_steps,
        )


# --------------------------------------------------------------------------------------------
# The cluster and the event loop
# --------------------------------------------------------------------------------------------

_EPOCH, _READY, _ARRIVAL, _TICK = range(4)
"""Event kinds, in the order they run at equal times."""


class Controller(Protocol):
    """A policy adapter: ticks every ``tick_s`` and acts on the cluster."""

    tick_s: float

    def initial_caps(self) -> tuple[int | None, int | None]: ...

    def tick(self, now: float, cluster: Cluster) -> None: ...


class Cluster:
    """The service: replicas, the router, the event loop. Controllers act on it by ``scale_to`` and
    ``set_caps``."""

    def __init__(
        self,
        cal: Calibration,
        engine: EngineConfig,
        controller: Controller,
        initial_replicas: int,
        pod_start_s: float,
    ) -> None:
        self.cal, self.engine, self.controller = cal, engine, controller
        self.table = draft_table(cal)
        self.schedule: Schedule | None = getattr(controller, "schedule", None)
        self.pod_start_s = pod_start_s
        self.pods: list[Replica] = []
        self.desired = 0
        self.scale_events = 0
        self.cap_changes = 0
        self.now = 0.0
        self._events: list[tuple[float, int, int, int, int]] = []
        self._seq = 0
        self._pending: deque[_Live] = deque()
        self.done: list[_Live] = []
        for _ in range(initial_replicas):
            self._add_pod(0.0, ready_at=0.0)
        self.desired = initial_replicas

    # -- events
    def _push(self, t: float, kind: int, ref: int = 0, version: int = 0) -> None:
        self._seq += 1
        heapq.heappush(self._events, (t, kind, self._seq, ref, version))

    def _schedule(self, pod: Replica, end: float | None) -> None:
        if end is not None:
            self._push(end, _EPOCH, pod.id, pod.version)

    # -- what controllers see and do
    def active_pods(self) -> list[Replica]:
        return [p for p in self.pods if p.active]

    def ready_pods(self) -> list[Replica]:
        return [p for p in self.pods if p.active and p.ready]

    def loading_pods(self) -> list[Replica]:
        return [p for p in self.pods if p.active and not p.ready]

    def _add_pod(self, now: float, ready_at: float) -> None:
        pod = Replica(
            len(self.pods),
            now,
            ready_at,
            self.cal,
            self.engine,
            self.controller.initial_caps(),
            self.table,
            self.schedule,
        )
        self.pods.append(pod)
        if not pod.ready:
            self._push(ready_at, _READY, pod.id)

    def _stop_if_idle(self, pod: Replica, now: float) -> None:
        if pod.draining and pod.load == 0 and not pod.busy and pod.stopped_at is None:
            pod.stopped_at = now

    def scale_to(self, desired: int, now: float) -> None:
        """Set the workload's replicas: start pods, or cancel loading ones (newest first) and then
        drain the least loaded ready ones."""
        if desired == self.desired:
            return
        self.scale_events += 1
        self.desired = desired
        while len(self.active_pods()) < desired:
            self._add_pod(now, now + self.pod_start_s)
        while len(self.active_pods()) > desired:
            loading = self.loading_pods()
            if loading:
                loading[-1].stopped_at = now
                continue
            victim = min(self.ready_pods(), key=lambda p: (p.load, -p.id))
            victim.draining = True
            self._stop_if_idle(victim, now)

    def set_caps(self, pod: Replica, soft: int | None, hard: int | None, now: float) -> None:
        if (soft, hard) == (pod.soft_cap, pod.hard_cap):
            return
        self.cap_changes += 1
        changes_epoch = pod.caps_change_epoch(soft, hard)
        pod.soft_cap, pod.hard_cap = soft, hard
        if changes_epoch and pod.cut(now):
            self._schedule(pod, pod.epoch_end)

    # -- requests
    def _route(self, live: _Live, now: float) -> None:
        ready = self.ready_pods()
        if not ready:
            self._pending.append(live)
            return
        pod = min(ready, key=lambda p: (p.load, p.id))
        pod.waiting.append(live)
        if not pod.busy:
            self._schedule(pod, pod.plan(now))
        elif len(pod.running) < self.engine.max_num_seqs and pod.cut(now):
            self._schedule(pod, pod.epoch_end)

    def run(self, requests: Sequence[Request], horizon_s: float) -> float:
        """Simulate until every request finished (or ``horizon_s``); the end time."""
        for req in requests:
            self._push(req.arrival, _ARRIVAL, req.id)
        self._push(self.controller.tick_s, _TICK)
        total = len(requests)
        if total == 0:
            return 0.0
        end = 0.0
        while self._events:
            t, kind, _, ref, version = heapq.heappop(self._events)
            if t > horizon_s:
                break
            self.now = t
            if kind == _EPOCH:
                pod = self.pods[ref]
                if version != pod.version or not pod.busy:
                    continue
                finished = pod.finish_epoch()
                self.done.extend(finished)
                self._schedule(pod, pod.plan(t))
                self._stop_if_idle(pod, t)
                if len(self.done) == total:
                    end = t
                    break
            elif kind == _READY:
                pod = self.pods[ref]
                if pod.stopped_at is None:
                    pod.ready = True
                    while self._pending:
                        self._route(self._pending.popleft(), t)
            elif kind == _ARRIVAL:
                req = requests[ref]
                self._route(_Live(req, req.prompt_tokens, float(req.output_tokens - 1)), t)
            else:
                self.controller.tick(t, self)
                self._push(t + self.controller.tick_s, _TICK)
        return end or self.now

    def gpu_seconds(self, end: float) -> float:
        return sum(
            ((p.stopped_at if p.stopped_at is not None else end) - p.created) * self.engine.gpus_per_replica
            for p in self.pods
        )


# --------------------------------------------------------------------------------------------
# Policies
# --------------------------------------------------------------------------------------------

WINDOW_S = 30.0
"""Seconds of samples per pod the operator's policies see (ControllerConfig.window_s's default)."""
MAX_AGE_S = 20.0
"""ControllerConfig.max_age_s's default."""
OPERATOR_TICK_S = 5.0
"""Seconds between the operator's scrapes and decisions (ARCTIC_OPERATOR_SCRAPE_SECONDS' default)."""
HPA_SYNC_S = 15.0
"""Seconds between HPA evaluations of KEDA's metric (kube-controller-manager's default)."""
MIN_REPLICAS, MAX_REPLICAS = 1, 8
CAP_MIN, CAP_MAX = 1, 64
"""spec.speculation.capController min/max defaults."""
FIXED_CAP = 64
"""The soft cap of keda-waiting-5 and the initial one of ours: Arctic Inference's default
disable_by_batch_size (and capController.max)."""
STATIC_CAPS: tuple[int | None, ...] = (0, 4, 8, 16, 32, 64, 128, None)
"""The fixed soft caps compared (no hard cap); None: no cap (static-cap-none)."""
SCHEDULES: dict[str, Schedule] = {
    # vLLM 0.32's Dynamic SD: num_speculative_tokens_per_batch_size, up to N running -> k tokens.
    "k5-16-k3-32-k1-64": ((16, 5), (32, 3), (64, 1)),
    "k5-8-k3-32": ((8, 5), (32, 3)),
    "k3-16-k1-64": ((16, 3), (64, 1)),
    "k16-8-k5-32-k1-128": ((8, 16), (32, 5), (128, 1)),
}
"""Draft-length schedules: each names its ranges (k5-16: 5 tokens up to 16 running)."""


def static_name(cap: int | None) -> str:
    return f"static-cap-{'none' if cap is None else cap}"


POLICIES = (
    "ours",
    *(static_name(n) for n in STATIC_CAPS),
    *(f"schedule-{name}" for name in SCHEDULES),
    "keda-waiting-5",
)


NO_BUDGET = "ours-no-ttft-budget"
"""Ours without the cap policy's TTFT budget (``capController.ttftBudgetPercent`` unset): not in
the default runs; ``--policies`` and ``--what-if-replicas`` use it."""

OURS_DRAFT = "ours-draft-"
"""``ours-draft-K``: ours (caps and replicas) with every pod's drafts cut to at most K tokens at any
batch size, K one of ``SCHEDULE_SETTINGS`` (the lengths whose acceptance was measured) other than
our default of ``DEFAULT_DRAFT_CAP``: a per-pod draft length fixed in hindsight, the upper bound of
a second knob that picks one length per pod. Not in the default runs; ``--policies`` uses it."""

OURS_TTFT = "ours-ttft-"
"""``ours-ttft-P``: ours with ``capController.ttftBudgetPercent`` P (the default's rows are ``ours``),
to compare budgets on the same requests. Not in the default runs; ``--policies`` uses it."""


def ours_draft_schedule(k: int) -> Schedule:
    """``ours-draft-K``'s draft length: K tokens up to any number of running requests."""
    return ((EngineConfig.max_num_seqs, k),)


RUNNING_TARGET = 32
"""Requests, spec.autoscaling.targets.runningRequestsPerReplica of ours, static-cap-N and
schedule-N, on top of the CR's default targets (5 waiting per replica, 80 % KV cache). Why:
waiting stays 0 until a replica is full (256 running), so the default targets alone scale down to
one replica under any load that fits it on paper, it saturates, and the service cycles. 32 keeps a
replica where its step time is flat (6.7-7.6 ms up to batch 64) and where drafting pays."""

HEADROOM_REPLICAS = 1
"""spec.autoscaling.burst.headroomReplicas of ours, static-cap-N and schedule-N."""
QUEUE_GROWTH_LEAD_S = 0
"""spec.autoscaling.burst.queueGrowthLeadSeconds of ours, static-cap-N and schedule-N: off. Measured
with --levers (control-bursty-levers.json): projecting the growth 120 s ahead (about a replica's
time-to-serve) did not lower the bursty p95 TTFT and cost GPU-seconds, with or without headroom."""
LEVER_LEAD_S = 120
"""The growth lead --levers tries."""
COMPILE_CACHE = True
"""spec.compileCache of every policy's pods (hostPath): a new pod starts with warm caches. Off,
every new pod starts cold (``COLD_ENGINE_START_S``)."""


@dataclass(frozen=True)
class Levers:
    """The burst levers a run uses (the CR's fields)."""

    headroom_replicas: int = HEADROOM_REPLICAS
    queue_growth_lead_s: int = QUEUE_GROWTH_LEAD_S
    compile_cache: bool = COMPILE_CACHE


def autoscaling_spec(
    running_target: int | None = RUNNING_TARGET, levers: Levers | None = None
) -> AutoscalingSpec:
    """The CR's spec.autoscaling for ours, static-cap-N and schedule-N: the default targets plus
    ``running_target`` running per replica (None: defaults only), scale-up after 60 s, scale-down
    after 300 s (the defaults), and the burst levers."""
    levers = levers or Levers()
    targets = AutoscalingTargets(
        waiting_requests_per_replica=5, kv_cache_usage=0.8, running_requests_per_replica=running_target
    )
    return AutoscalingSpec(
        min_replicas=MIN_REPLICAS,
        max_replicas=MAX_REPLICAS,
        targets=targets,
        burst=BurstSpec(
            queue_growth_lead_seconds=levers.queue_growth_lead_s,
            headroom_replicas=levers.headroom_replicas,
        ),
    )


def speculation_spec(ttft_budget_percent: float | None = None) -> SpeculationSpec:
    """The CR's spec.speculation of ours: suffix decoding, the cap controller on with its default
    bounds and (None) its default TTFT budget."""
    if ttft_budget_percent is None:
        ttft_budget_percent = CapControllerSpec.model_fields["ttft_budget_percent"].default
    controller = CapControllerSpec(
        enabled=True, min=CAP_MIN, max=CAP_MAX, ttft_budget_percent=ttft_budget_percent
    )
    return SpeculationSpec(method="suffix", soft_cap=FIXED_CAP, cap_controller=controller)


class OperatorController:
    """ours (``cap_policy`` set), static-cap-N (``fixed_caps``) or schedule-N (``schedule``): the
    operator's own ``ControlLoop`` (control/loop.py), fed the samples a scrape would parse."""

    def __init__(
        self,
        cap_policy: CapPolicy | None,
        fixed_caps: tuple[int | None, int | None],
        running_target: int | None = RUNNING_TARGET,
        schedule: Schedule | None = None,
        levers: Levers | None = None,
        replay_replicas: Sequence[int] | None = None,
        costs: VerifyCosts = DEFAULT_COSTS,
    ) -> None:
        self.tick_s = OPERATOR_TICK_S
        self.fixed_caps = fixed_caps
        self.schedule = schedule
        self.replay_replicas = replay_replicas
        """A what-if (--what-if-replicas): the replica count of each tick from another run's
        ``replica_log`` (the last one after its end) instead of the policy's decision."""
        self.replica_log: list[int] = []
        """The workload's replicas after each tick."""
        self.loop = ControlLoop(
            ReplicaPolicy.from_spec(autoscaling_spec(running_target, levers), costs),
            cap_policy,
            window_s=WINDOW_S,
            max_age_s=MAX_AGE_S,
        )
        self.cap_reasons: dict[str, int] = {}

    def initial_caps(self) -> tuple[int | None, int | None]:
        return self.fixed_caps

    def tick(self, now: float, cluster: Cluster) -> None:
        ready = cluster.ready_pods()
        names = {pod.id: str(pod.id) for pod in ready}
        for pod in ready:
            self.loop.observe(names[pod.id], pod.sample(now).pod_sample())
        self.loop.forget(names.values())
        decided = self.loop.decide(
            now, cluster.desired, [names[p.id] for p in ready], len(cluster.loading_pods())
        )
        if self.replay_replicas is not None:
            tick = min(len(self.replica_log), len(self.replay_replicas) - 1)
            cluster.scale_to(self.replay_replicas[tick], now)
        elif decided.replicas is not None:
            cluster.scale_to(decided.replicas.desired, now)
        self.replica_log.append(cluster.desired)
        for pod in ready:
            cap = decided.caps.get(names[pod.id])
            if cap is None:
                continue
            self.cap_reasons[cap.reason] = self.cap_reasons.get(cap.reason, 0) + 1
            if pod.active and cap.changed and cap.soft_cap is not None:
                cluster.set_caps(pod, cap.soft_cap, cap.hard_cap, now)


class KedaController:
    """KEDA's Prometheus trigger ``sum(vllm:num_requests_waiting)`` with threshold 5 (AverageValue),
    acted on by the HPA with its default behaviour: desired = ceil(total waiting / 5) outside a 10 %
    tolerance, clamped to [min, max]; scale up at once (at most max(4 pods, 100 %) per sync), scale
    down to the largest recommendation of the last 300 s. The caps never change."""

    threshold = 5.0
    tolerance = 0.1
    scale_down_window_s = 300.0

    def __init__(self, caps: tuple[int | None, int | None]) -> None:
        self.tick_s = HPA_SYNC_S
        self.caps = caps
        self.history: deque[tuple[float, int]] = deque()

    def initial_caps(self) -> tuple[int | None, int | None]:
        return self.caps

    def tick(self, now: float, cluster: Cluster) -> None:
        current = cluster.desired
        if not self.history:
            # The HPA has been running at the initial count before the trace (as ours' window has).
            self.history.append((0.0, current))
        waiting = sum(pod.sample(now).waiting for pod in cluster.ready_pods())
        ratio = waiting / (self.threshold * current)
        raw = current if abs(ratio - 1) <= self.tolerance else math.ceil(waiting / self.threshold - 1e-9)
        raw = max(MIN_REPLICAS, min(MAX_REPLICAS, raw))
        self.history.append((now, raw))
        while self.history[0][0] < now - self.scale_down_window_s:
            self.history.popleft()
        if raw > current:
            desired = min(raw, current + max(4, current))
        else:
            desired = min(current, max(r for _, r in self.history))
        cluster.scale_to(desired, now)


def make_controller(
    policy: str,
    running_target: int | None = RUNNING_TARGET,
    cal: Calibration | None = None,
    levers: Levers | None = None,
    drafts_with_prefill: bool = True,
) -> Controller:
    """The policy's controller; ``drafts_with_prefill``: whether ours' cap policy prices drafts in
    prefill steps (the engines' behaviour, EngineConfig.drafts_with_prefill)."""
    costs = cal.costs() if cal is not None else DEFAULT_COSTS
    if policy in ("ours", NO_BUDGET) or policy.startswith(OURS_TTFT):
        percent = None
        if policy.startswith(OURS_TTFT):
            try:
                percent = float(policy.removeprefix(OURS_TTFT))
            except ValueError:
                raise ValueError(f"{policy!r}: {OURS_TTFT}<percent>, a number (ttftBudgetPercent)") from None
        cap_policy = replace(
            CapPolicy.from_spec(speculation_spec(percent), costs), drafts_with_prefill=drafts_with_prefill
        )
        if policy == NO_BUDGET:
            cap_policy = replace(cap_policy, ttft_budget=None)
        return OperatorController(cap_policy, (FIXED_CAP, None), running_target, levers=levers, costs=costs)
    if policy.startswith(OURS_DRAFT) and policy.removeprefix(OURS_DRAFT) in {
        str(k) for k in SCHEDULE_SETTINGS if k != DEFAULT_DRAFT_CAP
    }:
        cap_policy = replace(
            CapPolicy.from_spec(speculation_spec(), costs), drafts_with_prefill=drafts_with_prefill
        )
        schedule = ours_draft_schedule(int(policy.removeprefix(OURS_DRAFT)))
        return OperatorController(
            cap_policy, (FIXED_CAP, None), running_target, schedule, levers, costs=costs
        )
    if policy.startswith("static-cap-"):
        name = policy.removeprefix("static-cap-")
        cap = None if name == "none" else int(name)
        return OperatorController(None, (cap, None), running_target, levers=levers, costs=costs)
    if policy.startswith("schedule-") and policy.removeprefix("schedule-") in SCHEDULES:
        schedule = SCHEDULES[policy.removeprefix("schedule-")]
        return OperatorController(None, (None, None), running_target, schedule, levers, costs=costs)
    if policy == "keda-waiting-5":
        return KedaController((FIXED_CAP, None))
    raise ValueError(
        f"unknown policy {policy!r} (known: {', '.join((*POLICIES, NO_BUDGET))}, {OURS_DRAFT}K, {OURS_TTFT}P)"
    )


# --------------------------------------------------------------------------------------------
# One run, rows, files
# --------------------------------------------------------------------------------------------

TAIL_S = 3600.0
"""Seconds after the trace's end within which every request must finish (else counted unfinished)."""


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of ``values``; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass(frozen=True)
class RunResult:
    policy: str
    trace: str
    requests: int
    completed: int
    end_s: float
    gpu_seconds: float
    ttft_s: tuple[float, ...]
    e2e_s: tuple[float, ...]
    scale_events: int
    cap_changes: int
    max_replicas: int
    drafted_fraction: float
    """Drafting request-steps / decoding request-steps."""
    pods: tuple[tuple[float, float], ...]
    """(created, stopped) per pod."""

    def row(self) -> dict[str, Any]:
        def r(x: float) -> float:
            return round(x, 4)

        return {
            "policy": self.policy,
            "trace": self.trace,
            "p50_ttft_s": r(percentile(self.ttft_s, 50)),
            "p95_ttft_s": r(percentile(self.ttft_s, 95)),
            "p95_e2e_s": r(percentile(self.e2e_s, 95)),
            "gpu_seconds": round(self.gpu_seconds, 1),
            "p50_e2e_s": r(percentile(self.e2e_s, 50)),
            "p99_ttft_s": r(percentile(self.ttft_s, 99)),
            "requests": self.requests,
            "completed": self.completed,
            "unfinished": self.requests - self.completed,
            "end_s": round(self.end_s, 1),
            "mean_replicas": r(self.gpu_seconds / self.end_s) if self.end_s else 0.0,
            "max_replicas": self.max_replicas,
            "scale_events": self.scale_events,
            "cap_changes": self.cap_changes,
            "drafted_fraction": r(self.drafted_fraction),
        }


def simulate(
    policy: str,
    trace: Trace,
    cal: Calibration,
    seed: int = 0,
    engine: EngineConfig | None = None,
    requests: Sequence[Request] | None = None,
    controller: Controller | None = None,
    running_target: int | None = RUNNING_TARGET,
    levers: Levers | None = None,
) -> RunResult:
    """One policy on one trace."""
    engine = engine or EngineConfig(kv_capacity_tokens=cal.kv_capacity_tokens)
    levers = levers or Levers()
    requests = generate_requests(trace, cal, seed) if requests is None else requests
    cluster = Cluster(
        cal,
        engine,
        controller or make_controller(policy, running_target, cal, levers),
        trace.initial_replicas,
        pod_start_s=pod_start_s(cal, levers),
    )
    end = cluster.run(requests, trace.duration_s + TAIL_S)
    decode = sum(p.decode_request_steps for p in cluster.pods)
    drafted = sum(p.drafting_request_steps for p in cluster.pods)
    live_over_time = sorted(
        [(p.created, 1) for p in cluster.pods]
        + [(p.stopped_at, -1) for p in cluster.pods if p.stopped_at is not None]
    )
    most = alive = 0
    for _, change in live_over_time:
        alive += change
        most = max(most, alive)
    return RunResult(
        policy=policy,
        trace=trace.name,
        requests=len(requests),
        completed=len(cluster.done),
        end_s=end,
        gpu_seconds=cluster.gpu_seconds(end),
        ttft_s=tuple(
            live.first_token_at - live.req.arrival + cal.request_overhead_s
            for live in cluster.done
            if live.first_token_at is not None
        ),
        e2e_s=tuple(
            live.done_at - live.req.arrival + cal.request_overhead_s
            for live in cluster.done
            if live.done_at is not None
        ),
        scale_events=cluster.scale_events,
        cap_changes=cluster.cap_changes,
        max_replicas=most,
        drafted_fraction=drafted / decode if decode else 0.0,
        pods=tuple((p.created, p.stopped_at if p.stopped_at is not None else end) for p in cluster.pods),
    )


def cost_file(cal: Calibration) -> dict[str, Any]:
    """The chart's cost file (charts/arctic-serve/files/cost/): the verify-cost curves, rounded."""
    costs = cal.costs()
    data = costs.to_json()
    data["verifyCost"] = {k: [round(r, 3) for r in ratios] for k, ratios in data["verifyCost"].items()}
    data["decodeStepSeconds"] = [round(t, 6) for t in data.get("decodeStepSeconds", [])]
    if "prefillSecondsPerToken" in data:
        data["prefillSecondsPerToken"] = float(f"{data['prefillSecondsPerToken']:.4g}")
    return data


def pod_start_s(cal: Calibration, levers: Levers) -> float:
    """Seconds from a pod's creation to serving: the pod overhead plus the engine's start, warm
    with spec.compileCache, cold without."""
    return POD_START_OVERHEAD_S + (cal.engine_start_s if levers.compile_cache else cal.cold_engine_start_s)


def _commit() -> str | None:
    """The code's commit: ARCTIC_BENCH_COMMIT when set (a device's git copy can lag the working tree
    it received, bench/gpu/README.md), else the checkout's HEAD."""
    if os.environ.get("ARCTIC_BENCH_COMMIT"):
        return os.environ["ARCTIC_BENCH_COMMIT"]
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def config_record(
    cal: Calibration,
    traces: Sequence[Trace],
    seed: int,
    quick: bool,
    running_target: int | None,
    levers: Levers | None = None,
) -> dict[str, Any]:
    levers = levers or Levers()
    return {
        "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": _commit(),
        "command": "python -m bench.control " + " ".join(sys.argv[1:]),
        "seed": seed,
        "quick": quick,
        "calibration": asdict(cal),
        "engine": asdict(EngineConfig(kv_capacity_tokens=cal.kv_capacity_tokens)),
        "pod_start_s": pod_start_s(cal, levers),
        "pod_start_overhead_s": POD_START_OVERHEAD_S,
        "levers": asdict(levers),
        "verify_costs": cal.costs().to_json(),
        "schedules": {name: [list(step) for step in sched] for name, sched in SCHEDULES.items()},
        "class_weights": CLASS_WEIGHTS,
        "requests": {
            "prompt": {"mean": PROMPT_MEAN, "log_sigma": PROMPT_SIGMA, "range": PROMPT_RANGE},
            "output": {"mean": OUTPUT_MEAN, "log_sigma": OUTPUT_SIGMA, "range": OUTPUT_RANGE},
        },
        "traces": [asdict(t) for t in traces],
        "policies": {
            "ours": {
                "autoscaling": autoscaling_spec(running_target, levers).model_dump(
                    by_alias=True, exclude_none=True
                ),
                "speculation": speculation_spec().model_dump(by_alias=True, exclude_none=True),
                "tick_s": OPERATOR_TICK_S,
                "window_s": WINDOW_S,
            },
            "static-cap-N": "ours' replica policy; soft cap N fixed, no hard cap; N in "
            f"{[static_name(n) for n in STATIC_CAPS]}",
            "schedule-NAME": "ours' replica policy; no caps; draft length by running requests "
            "(vLLM Dynamic SD); see schedules",
            "ours-draft-K": "ours (when run): caps and replicas as ours, every pod's drafts at most K "
            "tokens at any batch size",
            "keda-waiting-5": {
                "trigger": "sum(vllm:num_requests_waiting), AverageValue 5",
                "sync_s": HPA_SYNC_S,
                "scale_down_window_s": KedaController.scale_down_window_s,
                "soft_cap": FIXED_CAP,
                "hard_cap": None,
            },
            "replicas": {"min": MIN_REPLICAS, "max": MAX_REPLICAS},
        },
    }


def _simulate_job(job: tuple[str, Trace, Calibration, int, int | None, Levers]) -> RunResult:
    policy, trace, cal, seed, running_target, levers = job
    return simulate(policy, trace, cal, seed, running_target=running_target, levers=levers)


def _what_if_job(job: tuple[str, Trace, Calibration, int, int | None]) -> RunResult:
    policy, trace, cal, seed, running_target = job
    engine = EngineConfig(kv_capacity_tokens=cal.kv_capacity_tokens, drafts_with_prefill=False)
    controller = make_controller(policy, running_target, cal, drafts_with_prefill=False)
    return simulate(
        policy, trace, cal, seed, engine=engine, running_target=running_target, controller=controller
    )


WHAT_IF_POLICIES = ("ours", "static-cap-0", "static-cap-64")

REPLAY_REFERENCE = "static-cap-0"
"""--what-if-replicas: the run whose replica count per tick the others replay."""
REPLAY_POLICIES = (NO_BUDGET, "ours", "static-cap-8")
"""--what-if-replicas: the cap policies run on the reference's replicas, with drafts in steps that
carry prefill (vLLM) and without (a runtime that drops them). ``ours-no-ttft-budget``: ours with
CapPolicy.ttft_budget None (the break-even size alone, the policy before the budget)."""


def _what_if_replicas_job(job: tuple[Trace, Calibration, int, int | None]) -> list[dict[str, Any]]:
    """The reference policy on ``trace``, then each of REPLAY_POLICIES with its replica count per
    tick: what the caps cost TTFT when drafting cannot change the replicas."""
    trace, cal, seed, running_target = job
    requests = generate_requests(trace, cal, seed)
    reference = make_controller(REPLAY_REFERENCE, running_target, cal)
    assert isinstance(reference, OperatorController)
    base = simulate(REPLAY_REFERENCE, trace, cal, seed, requests=requests, controller=reference)
    rows = [{**base.row(), "drafts_with_prefill": True, "replicas": "own"}]
    for policy in REPLAY_POLICIES:
        for with_prefill in (True, False):
            controller = make_controller(policy, running_target, cal, drafts_with_prefill=with_prefill)
            assert isinstance(controller, OperatorController)
            controller.replay_replicas = reference.replica_log
            engine = EngineConfig(kv_capacity_tokens=cal.kv_capacity_tokens, drafts_with_prefill=with_prefill)
            run = simulate(policy, trace, cal, seed, engine=engine, requests=requests, controller=controller)
            row = {**run.row(), "drafts_with_prefill": with_prefill, "replicas": REPLAY_REFERENCE}
            row["p95_ttft_vs_reference"] = round(row["p95_ttft_s"] / rows[0]["p95_ttft_s"] - 1, 4)
            rows.append(row)
    return rows


def run_all(
    traces: Sequence[Trace],
    cal: Calibration,
    seed: int,
    policies: Sequence[str] = POLICIES,
    running_target: int | None = RUNNING_TARGET,
    jobs: int = 1,
    levers: Levers | None = None,
) -> dict[str, list[RunResult]]:
    """Every policy on every trace (the same requests for all policies of a trace), in ``jobs``
    processes."""
    levers = levers or Levers()
    work = [(p, t, cal, seed, running_target, levers) for t in traces for p in policies]
    if jobs > 1:
        with ProcessPoolExecutor(max_workers=min(jobs, len(work))) as pool:
            runs = list(pool.map(_simulate_job, work))
    else:
        runs = [_simulate_job(job) for job in work]
    results: dict[str, list[RunResult]] = {t.name: [] for t in traces}
    for run in runs:
        results[run.trace].append(run)
    return results


LEVER_GRID = (
    Levers(0, 0, False),
    Levers(0, 0, True),
    Levers(0, LEVER_LEAD_S, True),
    Levers(HEADROOM_REPLICAS, LEVER_LEAD_S, True),
    Levers(HEADROOM_REPLICAS, 0, False),
    Levers(HEADROOM_REPLICAS, 0, True),
)
"""--levers: ``ours`` with each burst lever off and on (the last row is the default setting)."""


def lever_setting(levers: Levers) -> str:
    cache = "warm" if levers.compile_cache else "cold"
    return f"headroom={levers.headroom_replicas} lead={levers.queue_growth_lead_s}s compile-cache={cache}"


def lever_id(levers: Levers) -> str:
    """A short name of the setting (claims cite rows by it): h1-l0-warm."""
    cache = "warm" if levers.compile_cache else "cold"
    return f"h{levers.headroom_replicas}-l{levers.queue_growth_lead_s}-{cache}"


def run_levers(
    traces: Sequence[Trace], cal: Calibration, seed: int, running_target: int | None, jobs: int
) -> dict[str, list[dict[str, Any]]]:
    """``ours`` under each setting of LEVER_GRID; rows carry the setting and the pod start."""
    work = [("ours", t, cal, seed, running_target, levers) for t in traces for levers in LEVER_GRID]
    if jobs > 1:
        with ProcessPoolExecutor(max_workers=min(jobs, len(work))) as pool:
            runs = list(pool.map(_simulate_job, work))
    else:
        runs = [_simulate_job(job) for job in work]
    out: dict[str, list[dict[str, Any]]] = {t.name: [] for t in traces}
    for job, run in zip(work, runs, strict=True):
        levers = job[5]
        row = {**run.row(), "id": lever_id(levers), "setting": lever_setting(levers), **asdict(levers)}
        row["pod_start_s"] = round(pod_start_s(cal, levers), 1)
        out[run.trace].append(row)
    return out


def write_results(results: dict[str, list[RunResult]], out: Path, config: dict[str, Any]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for trace, runs in results.items():
        path = out / f"control-{trace}.json"
        path.write_text(json.dumps([run.row() for run in runs], indent=1) + "\n")
        paths.append(path)
    config_path = out / "control-config.json"
    config_path.write_text(json.dumps(config, indent=1, default=str) + "\n")
    return [*paths, config_path]


def plot_rows(rows_by_trace: dict[str, list[dict[str, Any]]], out: Path) -> bool:
    """p95 TTFT and GPU-seconds per policy, one column per trace (False without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    traces = list(rows_by_trace)
    fig, axes = plt.subplots(2, len(traces), figsize=(5 * len(traces), 7), squeeze=False)
    for col, trace in enumerate(traces):
        rows = rows_by_trace[trace]
        names = [r["policy"] for r in rows]
        colors = [
            "tab:green"
            if n == "ours"
            else "tab:gray"
            if n.startswith("static")
            else "tab:blue"
            if n.startswith("schedule")
            else "tab:orange"
            for n in names
        ]
        for row_i, (key, label) in enumerate(
            (("p95_ttft_s", "p95 TTFT (s)"), ("gpu_seconds", "GPU-seconds"))
        ):
            ax = axes[row_i][col]
            ax.bar(range(len(rows)), [r[key] for r in rows], color=colors)
            ax.set_xticks(range(len(rows)), names, rotation=60, ha="right", fontsize=6)
            ax.set_ylabel(label)
            if key == "p95_ttft_s":
                ax.set_yscale("log")
                ax.set_ylim(bottom=0.01)
                ax.set_title(trace)
            ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Control-loop simulator (Llama-3.1-8B shape, calibrated from bench/results)", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return True


QUICK_FACTOR = 0.1
"""--quick: every trace in this fraction of its time (same rates), for a smoke test."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.control", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS, help="where control-<trace>.json go")
    parser.add_argument("--traces", default=",".join(TRACES), help=f"comma-separated of {', '.join(TRACES)}")
    parser.add_argument("--quick", action="store_true", help=f"traces shortened to x{QUICK_FACTOR} (smoke)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, default=RESULTS, help="calibration: bench result files")
    parser.add_argument(
        "--calibration",
        choices=("h100", "h200", "served"),
        default="h200",
        help="h100: verify-8b, overhead-8b, throughput-8b files; h200: control-h200 (bench/gpu/calibrate.sh, "
        "offline engine); served: control-served (bench/gpu/validate.sh's probe of the served engine)",
    )
    parser.add_argument("--plot", type=Path, help="also write the PNG plot here")
    parser.add_argument(
        "--running-target",
        type=int,
        default=RUNNING_TARGET,
        help="ours/static-cap-N: running requests per replica target (0: the CR's default targets only)",
    )
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes")
    parser.add_argument(
        "--headroom", type=int, default=HEADROOM_REPLICAS, help="burst.headroomReplicas (not keda)"
    )
    parser.add_argument(
        "--growth-lead", type=int, default=QUEUE_GROWTH_LEAD_S, help="burst.queueGrowthLeadSeconds (not keda)"
    )
    parser.add_argument("--no-compile-cache", action="store_true", help="every new pod starts cold")
    parser.add_argument(
        "--what-if-prefill",
        action="store_true",
        help="instead: engines that drop drafts in steps with prefill (a what-if)",
    )
    parser.add_argument(
        "--what-if-replicas",
        action="store_true",
        help=f"instead: {', '.join(REPLAY_POLICIES)} on {REPLAY_REFERENCE}'s replica count, to "
        "DIR/control-whatif-replicas.json",
    )
    parser.add_argument(
        "--levers",
        action="store_true",
        help="instead: ours with each burst lever on and off, to DIR/control-<trace>-levers.json",
    )
    parser.add_argument("--policies", help="comma-separated subset of the policies (default: all)")
    parser.add_argument(
        "--write-costs",
        type=Path,
        help="only write the calibration's verify-cost curves (the chart's cost file) to this path",
    )
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.traces.split(",") if n.strip()]
    unknown = [n for n in names if n not in TRACES]
    if unknown or not names:
        print(f"bench.control: unknown traces {unknown}; known: {', '.join(TRACES)}", file=sys.stderr)
        return 2
    traces = [TRACES[n].scaled(QUICK_FACTOR) if args.quick else TRACES[n] for n in names]
    loaders = {"h100": load_calibration, "h200": load_calibration_h200, "served": load_calibration_served}
    cal = loaders[args.calibration](args.results)
    if args.write_costs:
        args.write_costs.parent.mkdir(parents=True, exist_ok=True)
        args.write_costs.write_text(json.dumps(cost_file(cal), indent=2) + "\n")
        print(f"bench.control: wrote {args.write_costs}")
        return 0
    started = time.perf_counter()
    running_target = args.running_target or None
    if args.what_if_prefill:
        work = [(p, t, cal, args.seed, running_target) for t in traces for p in WHAT_IF_POLICIES]
        with ProcessPoolExecutor(max_workers=max(1, min(args.jobs, len(work)))) as pool:
            runs = list(pool.map(_what_if_job, work))
        path = args.out / "control-whatif-prefill.json"
        args.out.mkdir(parents=True, exist_ok=True)
        record = {
            "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "commit": _commit(),
            "command": "python -m bench.control " + " ".join(sys.argv[1:] if argv is None else argv),
            "what_if": "engines drop every draft in a step that carries a prefill chunk (the runtime's "
            "drafts_in_prefill_steps false); otherwise the default setting",
            "rows": [run.row() for run in runs],
        }
        path.write_text(json.dumps(record, indent=1) + "\n")
        print(f"bench.control: wrote {path}")
        for run in runs:
            row = run.row()
            print(
                f"{row['trace']:8} {row['policy']:15} p95 TTFT {row['p95_ttft_s']:.3f} s  "
                f"E2E p95 {row['p95_e2e_s']:.2f} s  GPU-s {row['gpu_seconds']:.0f}"
            )
        return 0
    if args.what_if_replicas:
        jobs = [(t, cal, args.seed, running_target) for t in traces]
        with ProcessPoolExecutor(max_workers=max(1, min(args.jobs, len(jobs)))) as pool:
            replay_rows = [row for rows in pool.map(_what_if_replicas_job, jobs) for row in rows]
        path = args.out / "control-whatif-replicas.json"
        args.out.mkdir(parents=True, exist_ok=True)
        record = {
            "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "commit": _commit(),
            "command": "python -m bench.control " + " ".join(sys.argv[1:] if argv is None else argv),
            "what_if": f"{', '.join(REPLAY_POLICIES)} with the replica count of {REPLAY_REFERENCE} at "
            "every tick (drafting cannot lower the replicas), with drafts in steps that carry prefill "
            "(vLLM) and without (drafts_with_prefill false: the runtime's drafts_in_prefill_steps false)",
            "rows": replay_rows,
        }
        path.write_text(json.dumps(record, indent=1) + "\n")
        print(f"bench.control: wrote {path}")
        for row in replay_rows:
            print(
                f"{row['trace']:8} {row['policy']:13} replicas {row['replicas']:12} "
                f"drafts with prefill {row['drafts_with_prefill']!s:5}  p95 TTFT {row['p95_ttft_s']:.4f} s "
                f"({row.get('p95_ttft_vs_reference', 0):+.1%})  E2E p95 {row['p95_e2e_s']:.2f} s  "
                f"GPU-s {row['gpu_seconds']:.0f}"
            )
        return 0
    if args.levers:
        lever_rows = run_levers(traces, cal, args.seed, running_target, max(1, args.jobs))
        args.out.mkdir(parents=True, exist_ok=True)
        for trace, rows in lever_rows.items():
            path = args.out / f"control-{trace}-levers.json"
            record = {
                "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "commit": _commit(),
                "command": "python -m bench.control " + " ".join(sys.argv[1:] if argv is None else argv),
                "seed": args.seed,
                "quick": args.quick,
                "rows": rows,
            }
            path.write_text(json.dumps(record, indent=1) + "\n")
            print(f"bench.control: wrote {path}")
            for row in rows:
                print(
                    f"{trace:8} {row['setting']:45} p95 TTFT {row['p95_ttft_s']:8.3f} s  "
                    f"GPU-s {row['gpu_seconds']:8.0f}  pod start {row['pod_start_s']:.0f} s"
                )
        return 0
    levers = Levers(args.headroom, args.growth_lead, not args.no_compile_cache)
    policies = [p.strip() for p in args.policies.split(",")] if args.policies else list(POLICIES)
    results = run_all(
        traces, cal, args.seed, policies, running_target=running_target, jobs=max(1, args.jobs), levers=levers
    )
    config = config_record(cal, traces, args.seed, args.quick, running_target, levers)
    config["duration_s"] = round(time.perf_counter() - started, 2)
    for path in write_results(results, args.out, config):
        print(f"bench.control: wrote {path}")
    for trace, runs in results.items():
        for run in runs:
            row = run.row()
            print(
                f"{trace:8} {row['policy']:15} TTFT p50 {row['p50_ttft_s']:7.3f} "
                f"p95 {row['p95_ttft_s']:7.3f} s  E2E p95 {row['p95_e2e_s']:7.2f} s  "
                f"GPU-s {row['gpu_seconds']:8.0f}  replicas mean {row['mean_replicas']:.2f} "
                f"max {row['max_replicas']}  drafted {row['drafted_fraction']:.2f}  "
                f"scale {row['scale_events']} caps {row['cap_changes']}  unfinished {row['unfinished']}"
            )
    if args.plot and plot_rows({t: [r.row() for r in runs] for t, runs in results.items()}, args.plot):
        print(f"bench.control: wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
