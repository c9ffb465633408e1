"""Shift Parallelism on several GPUs: TP-only, SP-only, shift, DP and Arctic Inference's shift.

Every layout serves the same model shape (dummy weights) on the same GPUs through vLLM's OpenAI
server, and the same client measures it:

* ``single``: one request at a time (``repeats`` times after a warm-up): TTFT and TPOT, the
  interactive user's view;
* ``batch``: ``n`` long prompts sent at once: total (prompt + output) tokens per second, the batch
  user's view;
* ``bursty``: a seeded arrival trace (a steady trickle plus bursts of long prompts, see
  ``bursty_trace``) replayed open loop: completion time (e2e) and TTFT percentiles.

Layouts for N GPUs (``layouts``): ``tp`` (tensor N), ``sp`` (tensor 1 x ulysses N), ``shift`` (the
same plus Shift Parallelism), ``dp`` (N one-GPU servers, requests round robin) and ``arctic-shift``
(Arctic Inference 0.3.0's shift with the same flags). Per layout the result also records the
engine's start time, memory per GPU (nvidia-smi after start; weights per GPU as our workers report
them), and the mode mix (steps and tokens per mode from ``GET /arctic/v1/parallel``).

One engine per command (a 10-minute device command fits one 8B engine: ~3-4 min start with
torch.compile and CUDA graphs cold, ~4 min of cases), so ``run`` takes ``--engines`` and writes a
part file; ``merge`` joins the parts of one host session into ``shift-<shape>-<N>gpu-<time>.json``
with the ``ratios`` (shift against each other layout, figure by figure). ``exact`` compares greedy
outputs of shift and TP-only on the real (head-padded) SmolLM2. ``plan`` prints the commands.

``--device cpu --shape tiny`` runs the whole thing on CPU (a 4-layer Llama, gloo) as a dry run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.load import percentiles, run_load_sync, summarize
from bench.run import REPO, engine_env, environment, free_port, server_argv
from bench.suites import llama_8b_config, llama_weight_bytes

# --------------------------------------------------------------------------------------------
# Shapes, layouts, workloads (plain data)
# --------------------------------------------------------------------------------------------


def llama_70b_config() -> dict[str, Any]:
    """Llama-3.3-70B's architecture (served in FP8 here, as in Arctic's Shift Parallelism paper)."""
    return {
        **llama_8b_config(),
        "hidden_size": 8192,
        "intermediate_size": 28672,
        "num_hidden_layers": 80,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "head_dim": 128,
    }


def tiny_config() -> dict[str, Any]:
    """A 4-layer Llama for the CPU dry run (8 query / 4 KV heads: splits over 2 and 4 ranks)."""
    return {
        **llama_8b_config(),
        "hidden_size": 256,
        "intermediate_size": 512,
        "num_hidden_layers": 4,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 32,
        "vocab_size": 32000,
        "max_position_embeddings": 4096,
        "torch_dtype": "float32",
    }


SHAPES = {"8b": llama_8b_config, "70b": llama_70b_config, "tiny": tiny_config}
#: Engine arguments per shape (every layout of a shape gets the same).
SHAPE_ARGS: dict[str, dict[str, Any]] = {
    "8b": {"dtype": "bfloat16", "max_model_len": 8192, "gpu_memory_utilization": 0.90},
    "70b": {
        "dtype": "bfloat16",
        "quantization": "fp8",
        "max_model_len": 8192,
        "gpu_memory_utilization": 0.90,
    },
    "tiny": {
        "dtype": "float32",
        "enforce_eager": True,
        "max_model_len": 2048,
        "max_num_batched_tokens": 1024,
    },
}
COMMON_ARGS: dict[str, Any] = {
    "load_format": "dummy",
    "skip_tokenizer_init": True,
    "max_num_batched_tokens": 8192,
}
#: Random prompts share nothing: prefix caching off for every layout alike.
EXTRA_FLAGS = ("--no-enable-prefix-caching",)
#: Tokens per step at or below which shift runs in full tensor parallelism (Arctic's default).
SHIFT_THRESHOLD = 512


@dataclass(frozen=True)
class Layout:
    """How N GPUs serve: ``servers`` engines of ``tensor x ulysses`` ranks each."""

    name: str
    servers: int
    tensor: int
    ulysses: int = 1
    shift: bool = False
    plugin: str = "arctic-serve"  # or "arctic-inference" (its own plugin, ours off)

    @property
    def gpus_per_server(self) -> int:
        return self.tensor * self.ulysses

    def flags(self, threshold: int) -> list[str]:
        """The parallel flags (Arctic Inference's spellings, accepted by both plugins)."""
        argv = ["--tensor-parallel-size", str(self.tensor)]
        if self.ulysses > 1:
            argv += ["--ulysses-sequence-parallel-size", str(self.ulysses)]
        if self.shift:
            argv += ["--enable-shift-parallel", "--shift-parallel-threshold", str(threshold)]
        return argv


def layouts(gpus: int) -> dict[str, Layout]:
    return {
        "tp": Layout("tp", 1, gpus),
        "sp": Layout("sp", 1, 1, gpus),
        "shift": Layout("shift", 1, 1, gpus, shift=True),
        "dp": Layout("dp", gpus, 1),
        "arctic-shift": Layout("arctic-shift", 1, 1, gpus, shift=True, plugin="arctic-inference"),
    }


@dataclass(frozen=True)
class Workload:
    single_input: int
    single_output: int
    single_repeats: int
    batch_prompts: int
    batch_input: int
    batch_output: int
    trace_seconds: float
    trickle_per_s: float
    trickle_input: int
    trickle_output: int
    burst_every_s: float
    burst_size: int
    burst_input: int
    burst_output: int


WORKLOADS = {
    "gpu": Workload(2000, 256, 5, 1024, 2000, 250, 90.0, 2.0, 1000, 200, 30.0, 96, 4000, 200),
    "cpu": Workload(256, 16, 2, 16, 256, 8, 20.0, 0.5, 64, 8, 10.0, 6, 384, 8),
}


@dataclass(frozen=True)
class Arrival:
    at_s: float
    input_len: int
    output_len: int


def bursty_trace(w: Workload, seed: int = 11) -> list[Arrival]:
    """A steady Poisson trickle of medium requests and, every ``burst_every_s``, a burst of long
    prompts arriving within one second: the traffic where a fixed layout is either slow to answer
    (tensor parallelism saturates) or slow per token (data/sequence parallelism)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    arrivals: list[Arrival] = []
    t = float(rng.exponential(1 / w.trickle_per_s))
    while t < w.trace_seconds:
        arrivals.append(Arrival(t, w.trickle_input, w.trickle_output))
        t += float(rng.exponential(1 / w.trickle_per_s))
    burst = w.burst_every_s / 2
    while burst < w.trace_seconds:
        arrivals += [
            Arrival(burst + float(x), w.burst_input, w.burst_output) for x in rng.uniform(0, 1, w.burst_size)
        ]
        burst += w.burst_every_s
    return sorted(arrivals, key=lambda a: a.at_s)


# --------------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------------


def server_env(layout: Layout, device: str, server_index: int, gpus: int) -> dict[str, str]:
    """Plugin switches and device placement for one server of a layout."""
    if layout.plugin == "arctic-inference":
        env = {
            "VLLM_PLUGINS": "arctic_inference",
            "ARCTIC_INFERENCE_ENABLED": "1",
            "ARCTIC_SERVE_ENABLED": "0",
        }
    else:
        env = {"VLLM_PLUGINS": "arctic_serve,arctic_serve_admin", "ARCTIC_SERVE_ENABLED": "1"}
        env["ARCTIC_SERVE_ADMIN_TOKEN"] = "bench"
    per = layout.gpus_per_server
    ids = list(range(server_index * per, (server_index + 1) * per))
    if device == "gpu":
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in ids)
        env["NCCL_NVLS_ENABLE"] = "0"  # NVLink multicast off on shared hosts
    else:
        from arctic_runtime.launcher import cpu_thread_binding

        cpus = sorted(os.sched_getaffinity(0))
        share = max(1, len(cpus) // layout.servers)
        mine = cpus[server_index * share : (server_index + 1) * share] or cpus
        env["VLLM_CPU_OMP_THREADS_BIND"] = cpu_thread_binding(per, mine)
    return env


def _get(url: str, token: str | None = None, timeout: float = 10) -> Any:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        return json.loads(resp.read().decode())


def gpu_memory_used_mib() -> list[int] | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return [int(x) for x in out.stdout.split()]


class Servers:
    """The servers of one layout, started together and stopped together."""

    def __init__(self, layout: Layout, model: str, args: dict[str, Any], device: str, gpus: int) -> None:
        self.layout, self.procs, self.bases, self.logs = layout, [], [], []
        self.admin_bases: list[str] = []  # our plugin's admin API: a port of its own per server
        log_dir = Path(tempfile.gettempdir()) / "arctic-bench"
        log_dir.mkdir(parents=True, exist_ok=True)
        for i in range(layout.servers):
            port, admin_port = free_port(), free_port()
            argv = [*server_argv(model, port, args), *EXTRA_FLAGS, *layout.flags(SHIFT_THRESHOLD)]
            log = log_dir / f"shift-{layout.name}-{i}-{port}.log"
            with open(log, "wb") as out:
                env = engine_env(
                    {**server_env(layout, device, i, gpus), "ARCTIC_SERVE_ADMIN_PORT": str(admin_port)},
                    device,
                )
                self.procs.append(
                    subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
                )
            self.bases.append(f"http://127.0.0.1:{port}")
            self.admin_bases.append(f"http://127.0.0.1:{admin_port}")
            self.logs.append(log)

    def wait_healthy(self, timeout_s: float) -> float:
        t0 = time.perf_counter()
        pending = set(range(len(self.bases)))
        while pending:
            for i in list(pending):
                if self.procs[i].poll() is not None:
                    raise RuntimeError(f"server {i} exited: {self.logs[i].read_text()[-2000:]}")
                try:
                    with urllib.request.urlopen(self.bases[i] + "/health", timeout=2) as resp:
                        if resp.status == 200:
                            pending.discard(i)
                except OSError:
                    pass
            if time.perf_counter() - t0 > timeout_s:
                raise RuntimeError(f"servers did not start within {timeout_s:.0f} s")
            time.sleep(1)
        return time.perf_counter() - t0

    def parallel_view(self) -> dict[str, Any] | None:
        """Our plugin's ``GET /arctic/v1/parallel`` of the first server (None for other engines)."""
        if self.layout.plugin != "arctic-serve":
            return None
        try:
            view: dict[str, Any] = _get(self.admin_bases[0] + "/arctic/v1/parallel", token="bench")
        except OSError:
            return None
        return view

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


# --------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------


def _prompts(n: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    return [rng.integers(1000, vocab, size=length).tolist() for _ in range(n)]


def _mode_delta(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, Any] | None:
    if before is None or after is None:
        return None
    return {
        key: {mode: after[key][mode] - before[key][mode] for mode in after[key]}
        for key in ("steps", "tokens")
    }


def run_cases(servers: Servers, w: Workload, vocab: int) -> dict[str, Any]:
    bases = servers.bases
    out: dict[str, Any] = {}
    # warm-up: a few requests of every size the cases use
    run_load_sync(bases, "bench", _prompts(2 * len(bases), w.batch_input, vocab, 0), 4, math.inf)

    before = servers.parallel_view()
    ttft, tpot = [], []
    for r in range(w.single_repeats):
        results, _ = run_load_sync(
            bases[r % len(bases)],
            "bench",
            _prompts(1, w.single_input, vocab, 100 + r),
            w.single_output,
            math.inf,
        )
        (res,) = results
        if res.ok and res.ttft_s is not None and res.output_tokens > 1:
            ttft.append(res.ttft_s * 1e3)
            tpot.append((res.e2e_s - res.ttft_s) / (res.output_tokens - 1) * 1e3)
    out["single"] = {
        "ttft_ms": percentiles(ttft, (50,)) | {"all": ttft},
        "tpot_ms": percentiles(tpot, (50,)) | {"all": tpot},
        "modes": _mode_delta(before, servers.parallel_view()),
    }

    before = servers.parallel_view()
    prompts = _prompts(w.batch_prompts, w.batch_input, vocab, 200)
    results, wall = run_load_sync(bases, "bench", prompts, w.batch_output, math.inf, max_concurrency=4096)
    summary = summarize(results, wall)
    total_tokens = sum(w.batch_input + r.output_tokens for r in results if r.ok)
    out["batch"] = {
        "total_tok_s": total_tokens / wall if wall > 0 else math.nan,
        "output_tok_s": summary["throughput_output_tok_s"],
        "wall_s": wall,
        "failed": summary["failed"],
        "modes": _mode_delta(before, servers.parallel_view()),
    }

    before = servers.parallel_view()
    trace = bursty_trace(w)
    prompts = [_prompts(1, a.input_len, vocab, 300 + i)[0] for i, a in enumerate(trace)]
    results, wall = run_load_sync(
        bases,
        "bench",
        prompts,
        [a.output_len for a in trace],
        math.inf,
        offsets=[a.at_s for a in trace],
        max_concurrency=4096,
    )
    ok = [r for r in results if r.ok]
    out["bursty"] = {
        "requests": len(results),
        "failed": len(results) - len(ok),
        "e2e_s": percentiles([r.e2e_s for r in ok]),
        "ttft_s": percentiles([r.ttft_s for r in ok if r.ttft_s is not None]),
        "wall_s": wall,
        "modes": _mode_delta(before, servers.parallel_view()),
    }
    return out


def run_layout(
    layout: Layout, model: str, shape: str, device: str, gpus: int, timeout_s: float
) -> dict[str, Any]:
    if layout.plugin == "arctic-inference":
        import importlib.util

        if importlib.util.find_spec("arctic_inference") is None:
            return {"error": "not run: arctic_inference is not importable"}
        if device != "gpu":
            return {"error": "not run: Arctic Inference needs a CUDA platform"}
    args = {**COMMON_ARGS, **SHAPE_ARGS[shape]}
    servers = Servers(layout, model, args, device, gpus)
    result: dict[str, Any] = {"layout": asdict(layout)}
    try:
        result["start_s"] = servers.wait_healthy(timeout_s)
        result["memory_mib_after_start"] = gpu_memory_used_mib()
        view = servers.parallel_view()
        if view is not None:
            result["weights_bytes_per_gpu"] = [w.get("weights_bytes") for w in view["workers"]]
        result["cases"] = run_cases(servers, WORKLOADS[device], SHAPES[shape]()["vocab_size"])
    except Exception as exc:  # reported in the result, the other layouts still run
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["log_tail"] = servers.logs[0].read_text()[-3000:]
    finally:
        servers.stop()
    return result


# --------------------------------------------------------------------------------------------
# Ratios
# --------------------------------------------------------------------------------------------

#: (case, figure path, higher is better)
FIGURES: tuple[tuple[str, str, bool], ...] = (
    ("single", "ttft_ms.p50", False),
    ("single", "tpot_ms.p50", False),
    ("batch", "total_tok_s", True),
    ("bursty", "e2e_s.p50", False),
    ("bursty", "e2e_s.p95", False),
    ("bursty", "e2e_s.p99", False),
    ("bursty", "ttft_s.p95", False),
)


def _figure(result: dict[str, Any], case: str, path: str) -> float | None:
    node: Any = result.get("cases", {}).get(case)
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return float(node) if isinstance(node, int | float) and math.isfinite(node) else None


def ratios(engines: dict[str, dict[str, Any]], subject: str = "shift") -> dict[str, dict[str, float]]:
    """``subject``'s figure over each other layout's: below 1 is better for times, above 1 for
    throughput (``FIGURES`` says which). Also ``shift/best-static`` for the bursty completion
    percentiles: the best of tp, sp and dp on that figure."""
    out: dict[str, dict[str, float]] = {}
    mine = engines.get(subject)
    if not mine:
        return out
    for name, other in engines.items():
        if name == subject:
            continue
        row = {}
        for case, path, _higher in FIGURES:
            a, b = _figure(mine, case, path), _figure(other, case, path)
            if a is not None and b:
                row[f"{case}.{path}"] = a / b
        if row:
            out[f"{subject}/{name}"] = row
    best: dict[str, float] = {}
    for case, path, higher in FIGURES:
        if case != "bursty":
            continue
        static = [v for n in ("tp", "sp", "dp") if (v := _figure(engines.get(n, {}), case, path)) is not None]
        a = _figure(mine, case, path)
        if static and a is not None:
            ref = max(static) if higher else min(static)
            if ref:
                best[f"{case}.{path}"] = a / ref
    if best:
        out[f"{subject}/best-static"] = best
    return out


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------


def write_model(shape: str, work: Path) -> str:
    folder = work / f"shift-{shape}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(SHAPES[shape](), indent=2))
    return str(folder)


def _stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def cmd_run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    chosen = args.engines.split(",") if args.engines else list(layouts(args.gpus))
    known = layouts(args.gpus)
    unknown = [e for e in chosen if e not in known]
    if unknown:
        print(f"bench.shift: unknown engines {unknown}; choose from {list(known)}", file=sys.stderr)
        return 2
    model = write_model(args.shape, out / ".work")
    part: dict[str, Any] = {
        "kind": "shift-part",
        "shape": args.shape,
        "gpus": args.gpus,
        "device": args.device,
        "created": _stamp(),
        "environment": environment(),
        "config": {
            "model": SHAPES[args.shape](),
            "engine_args": {**COMMON_ARGS, **SHAPE_ARGS[args.shape]},
            "shift_threshold": SHIFT_THRESHOLD,
            "workload": asdict(WORKLOADS[args.device]),
            "weight_bytes": llama_weight_bytes(SHAPES[args.shape](), 1 if args.shape == "70b" else 2),
        },
        "engines": {},
    }
    for name in chosen:
        t0 = time.perf_counter()
        print(
            f"bench.shift: {args.shape} on {args.gpus} {args.device}: {name} ...", file=sys.stderr, flush=True
        )
        part["engines"][name] = run_layout(
            known[name], model, args.shape, args.device, args.gpus, args.timeout
        )
        part["engines"][name]["wall_s"] = time.perf_counter() - t0
        print(f"bench.shift: {name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"shift-part-{args.shape}-{args.gpus}{args.device}-{'+'.join(chosen)}-{part['created']}.json"
    path.write_text(json.dumps(part, indent=2, sort_keys=True) + "\n")
    print(f"bench.shift: wrote {path}", file=sys.stderr)
    return 0


def merge(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One result from the parts of one session (same shape, GPU count and device)."""
    keys = {(p["shape"], p["gpus"], p["device"]) for p in parts}
    if len(keys) != 1:
        raise ValueError(f"parts from different runs: {sorted(keys)}")
    engines: dict[str, Any] = {}
    for part in sorted(parts, key=lambda p: str(p["created"])):
        engines.update(part["engines"])
    first = parts[0]
    return {
        "suite": "shift",
        "shape": first["shape"],
        "gpus": first["gpus"],
        "device": first["device"],
        "created": max(str(p["created"]) for p in parts),
        "parts": [p["created"] for p in parts],
        "environment": first["environment"],
        "config": first["config"],
        "engines": engines,
        "ratios": ratios(engines),
    }


def cmd_merge(args: argparse.Namespace) -> int:
    files = [f for pattern in args.parts for f in sorted(glob.glob(pattern))]
    if not files:
        print("bench.shift: no part files matched", file=sys.stderr)
        return 2
    result = merge([json.loads(Path(f).read_text()) for f in files])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    unit = "gpu" if result["device"] == "gpu" else "cpu"
    path = out / f"shift-{result['shape']}-{result['gpus']}{unit}-{result['created']}.json"
    path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(json.dumps(result["ratios"], indent=2))
    print(f"bench.shift: wrote {path}", file=sys.stderr)
    return 0


#: Minutes per engine on the H200 (start included), for the plan; see docs/benchmarks.md.
MINUTES_PER_ENGINE = {"8b": 7, "70b": 9, "tiny": 2}


def cmd_plan(args: argparse.Namespace) -> int:
    """The device commands of one run, one engine each (paste after the vLLM bundle)."""
    for name in layouts(args.gpus):
        print(
            f"bash bench/gpu/host.sh shift:{args.shape}:{args.gpus}:{name}"
            f"    # ~{MINUTES_PER_ENGINE[args.shape]} min"
        )
    print(f"python -m bench.shift merge 'bench/results/shift-part-{args.shape}-{args.gpus}gpu-*.json'")
    return 0


def cmd_exact(args: argparse.Namespace) -> int:
    """Greedy answers of shift vs TP-only on the real SmolLM2, head-padded (GPU, bf16)."""
    from tests.engine.prompts import PARALLEL_MAX_TOKENS, PARALLEL_PROMPTS

    from arctic_runtime.models import ensure_smollm2, head_padded_copy

    src = ensure_smollm2()
    padded = head_padded_copy(src, src.parent / f"{src.name}-heads12", 12, 4)
    runs: dict[str, Any] = {}
    configs = {
        "tp": {"tensor_parallel_size": args.gpus},
        "shift": {
            "additional_config": {
                "arctic": {"parallel": {"ulysses": args.gpus, "shift": True, "shift_threshold": 12}}
            }
        },
    }
    for name, extra in configs.items():
        request = {
            "model": str(padded),
            "prompts": PARALLEL_PROMPTS,
            "max_tokens": PARALLEL_MAX_TOKENS,
            **extra,
        }
        if args.device == "gpu":  # the GPU's own settings: bf16, CUDA graphs
            request["engine_args"] = {
                "dtype": "bfloat16",
                "enforce_eager": False,
                "gpu_memory_utilization": 0.5,
            }
        env = engine_env(server_env(Layout(name, 1, args.gpus), args.device, 0, args.gpus), args.device)
        proc = subprocess.run(
            [sys.executable, "-m", "tests.engine.parallel_runner", json.dumps(request)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        runs[name] = json.loads(lines[-1][7:]) if lines else {"error": proc.stderr[-3000:]}
    tp, shift = runs["tp"], runs["shift"]
    result: dict[str, Any] = {
        "kind": "shift-exact",
        "gpus": args.gpus,
        "device": args.device,
        "created": _stamp(),
    }
    result["environment"] = environment()
    if "token_ids" in tp and "token_ids" in shift:
        same = [a == b for a, b in zip(tp["token_ids"], shift["token_ids"], strict=True)]
        diffs = [
            abs(x - y)
            for a, b, eq in zip(tp["logprobs"], shift["logprobs"], same, strict=True)
            if eq
            for x, y in zip(a, b, strict=True)
        ]
        result.update(
            prompts=len(same),
            identical_answers=sum(same),
            max_logprob_diff_identical=max(diffs) if diffs else None,
            modes=shift.get("engine", {}).get("parallel"),
        )
    else:
        result["errors"] = {k: v.get("error") for k, v in runs.items() if "error" in v}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"shift-exact-{args.gpus}{args.device}-{result['created']}.json"
    path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "environment"}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.shift", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run layouts (one part file)")
    run.add_argument("--shape", choices=list(SHAPES), default="8b")
    run.add_argument("--gpus", type=int, default=2)
    run.add_argument("--engines", help=f"comma-separated, from {list(layouts(2))} (default: all)")
    run.add_argument("--device", choices=["gpu", "cpu"], default="gpu")
    run.add_argument("--timeout", type=float, default=480, help="seconds for the servers to start")
    run.add_argument("--out", default="bench/results")
    run.set_defaults(func=cmd_run)
    mrg = sub.add_parser("merge", help="join part files into one result with ratios")
    mrg.add_argument("parts", nargs="+", help="part files or glob patterns")
    mrg.add_argument("--out", default="bench/results")
    mrg.set_defaults(func=cmd_merge)
    plan = sub.add_parser("plan", help="print the device commands of one run")
    plan.add_argument("--shape", choices=list(SHAPES), default="8b")
    plan.add_argument("--gpus", type=int, default=2)
    plan.set_defaults(func=cmd_plan)
    exact = sub.add_parser("exact", help="greedy answers of shift vs TP-only on the real SmolLM2")
    exact.add_argument("--gpus", type=int, default=2)
    exact.add_argument("--device", choices=["gpu", "cpu"], default="gpu")
    exact.add_argument("--out", default="bench/results")
    exact.set_defaults(func=cmd_exact)
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
