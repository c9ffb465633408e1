"""Run a suite: every engine in its own process, then ratios within the run, then one JSON file."""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.util
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.headcost import HEAD_PLACEHOLDER
from bench.suites import (
    ENGINES,
    SUITES,
    Engine,
    ModelKey,
    Suite,
    llama_8b_config,
    llama_8b_swiftkv_config,
    llama_weight_bytes,
)

REPO = Path(__file__).resolve().parents[1]


def _cmd(*argv: str) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment() -> dict[str, Any]:
    """What produced the numbers: GPU, driver, software versions, commit."""
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    gpu = _cmd("nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader")
    env["gpu"] = gpu.splitlines()[0] if gpu else None
    probe = (
        "import json, torch, vllm; print(json.dumps({'torch': torch.__version__, 'vllm': vllm.__version__, "
        "'cuda': torch.version.cuda}))"
    )
    versions = _cmd(sys.executable, "-c", probe)
    env.update(json.loads(versions.splitlines()[-1]) if versions else {"vllm": None})
    from arctic_runtime import __version__

    env["arctic_serve"] = __version__
    env["commit"] = os.environ.get("ARCTIC_BENCH_COMMIT") or _cmd("git", "-C", str(REPO), "rev-parse", "HEAD")
    return env


def model_folder(model: ModelKey, work: Path) -> str:
    if model == "smollm2":
        from arctic_runtime.models import ensure_smollm2

        return str(ensure_smollm2())
    config = llama_8b_swiftkv_config() if model == "llama-3.1-8b-swiftkv-shape" else llama_8b_config()
    folder = work / model
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return str(folder)


def engine_env(extra: dict[str, str], device: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARCTIC_SERVE_", "ARCTIC_INFERENCE_"))}
    env.update({"HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "PYTHONUNBUFFERED": "1"})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    if device == "cpu":
        from arctic_runtime.launcher import CPU_KV_CACHE_GIB, find_iomp

        env.setdefault("VLLM_CPU_KVCACHE_SPACE", CPU_KV_CACHE_GIB)
        iomp = find_iomp()
        if iomp:
            env["LD_PRELOAD"] = iomp
    env.update(extra)
    return env


def with_head(engine_args: dict[str, Any], head: str | None) -> dict[str, Any]:
    """``engine_args`` with ``speculative_config.model`` = ``"{head}"`` replaced by ``head``."""
    spec = engine_args.get("speculative_config")
    if not isinstance(spec, dict) or spec.get("model") != HEAD_PLACEHOLDER:
        return engine_args
    if head is None:
        raise ValueError("an engine names the suite's head but the suite writes none (Suite.head)")
    return {**engine_args, "speculative_config": {**spec, "model": head}}


def run_engine(
    suite: Suite, engine_name: str, model: str, timeout_s: float, head: str | None = None
) -> dict[str, Any]:
    engine = ENGINES[engine_name]
    if engine.requires and importlib.util.find_spec(engine.requires) is None:
        return {"error": f"not run: {engine.requires} is not importable"}
    if suite.online:
        return run_online_engine(suite, engine, model, timeout_s)
    plan = {
        "model": model,
        "engine_args": with_head({**suite.engine_args, **engine.engine_args}, head),
        "cases": [asdict(c) for c in suite.cases],
    }
    return run_result_process(
        ["bench.worker", json.dumps(plan)],
        engine_env(engine.env, suite.device),
        timeout_s,
        f"engine {engine_name}",
    )


def run_result_process(
    module_args: list[str], env: dict[str, str], timeout_s: float, label: str
) -> dict[str, Any]:
    """``python -m MODULE_ARGS`` in its own process (an engine run): its last ``RESULT <json>`` line
    with ``wall_s`` added, or ``{"error", "wall_s"}`` when it fails or times out (stderr's tail, also
    printed)."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", *module_args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        tail = "\n".join(_text(exc.stderr).strip().splitlines()[-25:])
        print(f"bench: {label} timed out after {timeout_s:.0f} s:\n{tail}", file=sys.stderr)
        return {"error": f"timed out after {timeout_s:.0f} s: {tail[-2000:]}", "wall_s": timeout_s}
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-25:])
        print(f"bench: {label} failed (rc={proc.returncode}):\n{tail}", file=sys.stderr)
        return {"error": f"rc={proc.returncode}: {tail[-2000:]}", "wall_s": wall}
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    result["wall_s"] = wall
    return result


def _text(value: str | bytes | None) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value or ""


def server_argv(model: str, port: int, engine_args: dict[str, Any]) -> list[str]:
    """vLLM's OpenAI server command for the same engine arguments the offline runs use."""
    argv = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        model,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--served-model-name",
        "bench",
    ]
    return argv + cli_flags(engine_args)


def cli_flags(engine_args: dict[str, Any]) -> list[str]:
    """Engine arguments as vLLM server flags: ``--key-name value``, a bare flag for True, JSON for
    a dict, nothing for False or None."""
    argv: list[str] = []
    for key, value in engine_args.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif isinstance(value, dict):
            argv += [flag, json.dumps(value)]
        elif value is not False and value is not None:
            argv += [flag, str(value)]
    return argv


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerDidNotStart(RuntimeError):
    """The server process exited, or did not answer its health check in time."""

    def __init__(self, rc: int | None, log: Path) -> None:
        super().__init__(f"server did not start (rc={rc}), log {log}")
        self.rc, self.log = rc, log


@contextlib.contextmanager
def serving(
    argv: list[str], env: dict[str, str], log: Path, health_url: str, timeout_s: float
) -> Iterator[tuple[subprocess.Popen[bytes], float]]:
    """Start ``argv`` in the repository root (stdout and stderr to ``log``), wait until ``health_url``
    answers 200, and yield the process and its start seconds; on exit terminate it (kill after 60 s).
    ``ServerDidNotStart`` if it exits or does not answer within ``timeout_s``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        while True:
            if proc.poll() is not None or time.perf_counter() - t0 > timeout_s:
                raise ServerDidNotStart(proc.poll(), log)
            try:
                with urllib.request.urlopen(health_url, timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            time.sleep(1)
        yield proc, time.perf_counter() - t0
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def run_online_engine(suite: Suite, engine: Engine, model: str, timeout_s: float) -> dict[str, Any]:
    """Start the OpenAI server once, drive each rate with open-loop Poisson load, stop the server."""
    import numpy as np

    from bench.load import run_load_sync, summarize

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    argv = server_argv(model, port, {**suite.engine_args, **engine.engine_args})
    log = Path(tempfile.gettempdir()) / "arctic-bench" / f"server-{engine.name}-{port}.log"
    env = engine_env(engine.env, suite.device)
    try:
        with serving(argv, env, log, base + "/health", timeout_s) as (_, start_s):
            result: dict[str, Any] = {"start_s": start_s, "online": {}}
            vocab = 30000  # prompt token ids below every supported model's vocabulary size
            rng = np.random.default_rng(3)
            for case in suite.online:
                rows = []
                warm = [rng.integers(1000, vocab, size=case.input_len).tolist() for _ in range(8)]
                run_load_sync(base, "bench", warm, case.output_len, rate_per_s=float("inf"))
                for rate in case.rates:
                    n = max(8, int(rate * case.seconds_per_rate))
                    prompts = [rng.integers(1000, vocab, size=case.input_len).tolist() for _ in range(n)]
                    results, wall = run_load_sync(
                        base, "bench", prompts, case.output_len, rate_per_s=rate, seed=int(rate)
                    )
                    rows.append({"rate_per_s": rate, **summarize(results, wall)})
                    tps = rows[-1]["throughput_output_tok_s"]
                    print(
                        f"bench: {engine.name} {case.name} rate {rate}/s: {tps:.0f} output tok/s",
                        file=sys.stderr,
                        flush=True,
                    )
                result["online"][case.name] = rows
            return result
    except ServerDidNotStart as exc:
        return {"error": f"server did not start (rc={exc.rc}): {exc.log.read_text()[-1500:]}"}


#: The figure each case kind is compared on, and whether higher is better.
HEADLINE = {
    "latency": [("tpot_ms", False), ("ttft_ms", False)],
    "throughput": [("output_tok_s", True)],
    "acceptance": [],
    "e2e": [("ms_per_token", False)],
    "draft-cost": [("step_ms", False), ("tpot_ms", False)],
}


def ratios(suite: Suite, engines: dict[str, dict[str, Any]], baseline: str = "vanilla") -> dict[str, Any]:
    """engine/baseline medians for each case's headline figures (same run, same machine)."""
    out: dict[str, Any] = {}
    base = engines.get(baseline, {})
    if "cases" not in base:
        return out
    for name, result in engines.items():
        if name == baseline or "cases" not in result:
            continue
        row: dict[str, float] = {}
        for case in suite.cases:
            for figure, _higher in HEADLINE[case.kind]:
                b = base["cases"][case.name][figure]["median"]
                v = result["cases"][case.name][figure]["median"]
                row[f"{case.name}.{figure}"] = v / b
        out[f"{name}/{baseline}"] = row
    return out


def floor(suite: Suite) -> dict[str, Any] | None:
    """Single-request decode floor: weight bytes over measured device copy bandwidth."""
    if not suite.measure_floor:
        return None
    proc = subprocess.run(
        [sys.executable, "-m", "bench.floor"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=REPO,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        return {"error": proc.stderr[-1000:]}
    measured: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    weight_bytes = llama_weight_bytes(llama_8b_config())
    measured["weight_bytes"] = weight_bytes
    measured["floor_ms_per_token"] = weight_bytes / (measured["copy_bandwidth_gb_s"] * 1e9) * 1e3
    return measured


#: Seconds an engine needs at least to be worth starting under a budget (an 8B start is 1-3 min).
MIN_ENGINE_S = 60.0


def run_suite(
    name: str,
    out_dir: Path,
    engines: list[str] | None = None,
    timeout_s: float = 1800,
    budget_s: float | None = None,
) -> Path:
    """Run the suite's engines one after another and write ``<suite>-<time>.json``: rewritten after
    every engine (``"complete": false`` until the last), so a run cut short keeps what it measured.
    ``budget_s``: the whole run's wall-time limit (a device command's); each engine gets what is
    left (less than ``MIN_ENGINE_S``: not started, reported as such)."""
    suite = SUITES[name]
    chosen = engines or list(suite.engines)
    started = time.perf_counter()
    work = out_dir / ".work"
    models = {e: model_folder(suite.engine_models.get(e, suite.model), work) for e in chosen}
    head = None
    if suite.head is not None:
        from bench.headcost import write_dummy_head

        t0 = time.perf_counter()
        folder = work / f"{suite.model}-{suite.head}-head"
        head = str(write_dummy_head(models[chosen[0]], folder, suite.head))
        print(
            f"bench: wrote the {suite.head} head {head} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr
        )
    result: dict[str, Any] = {
        "suite": suite.name,
        "description": suite.description,
        "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "environment": environment(),
        "config": {
            "model": suite.model,
            "engine_models": suite.engine_models,
            "device": suite.device,
            "engine_args": suite.engine_args,
            "cases": [asdict(c) for c in suite.cases],
            "online": [asdict(c) for c in suite.online],
            "engines": {e: asdict(ENGINES[e]) for e in chosen},
        },
        "floor": floor(suite),
        "engines": {},
        "budget_s": budget_s,
        "head": head,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = result["created"].replace(":", "").replace("-", "")
    path = out_dir / f"{suite.name}-{stamp}.json"
    for i, engine in enumerate(chosen):
        left = timeout_s if budget_s is None else budget_s - (time.perf_counter() - started)
        if left < MIN_ENGINE_S:
            result["engines"][engine] = {
                "error": f"not run: {left:.0f} s of the {budget_s:.0f} s budget left "
                f"(needs {MIN_ENGINE_S:.0f})"
            }
        else:
            print(f"bench: {suite.name}: engine {engine} ...", file=sys.stderr, flush=True)
            result["engines"][engine] = run_engine(suite, engine, models[engine], min(timeout_s, left), head)
        write_result(path, result, suite, started, complete=i == len(chosen) - 1)
    print(f"bench: wrote {path} ({result['duration_s']:.0f} s)", file=sys.stderr)
    return path


def write_result(path: Path, result: dict[str, Any], suite: Suite, started: float, *, complete: bool) -> None:
    result["ratios"] = ratios(suite, result["engines"])
    if suite.head is not None:
        from bench.headcost import implied_section

        result["implied"] = implied_section(
            result["engines"], result["config"]["cases"], REPO / "bench" / "results"
        )
    result["duration_s"] = time.perf_counter() - started
    result["complete"] = complete
    path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
