"""Engine fixtures: vanilla and plugin-enabled offline runs, computed once per test session (the
ones several files use once per run, whichever pytest-xdist worker needs them first)."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from arctic_runtime.launcher import cpu_thread_binding
from tests.conftest import engine_env
from tests.engine.prompts import MAX_TOKENS, PARALLEL_MAX_TOKENS, PARALLEL_PROMPTS, PROMPTS

REPO = Path(__file__).resolve().parents[2]


def run_module(
    module: str, request: dict[str, Any], *, enabled: bool, timeout: float = 600, **env: str
) -> dict[str, Any]:
    """Run ``python -m module REQUEST_JSON`` in its own process, as a user's engine; its RESULT line.
    ``env``: extra environment variables for the engine."""
    proc = subprocess.run(
        [sys.executable, "-m", module, json.dumps(request)],
        cwd=REPO,
        env=engine_env(enabled, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"{module} failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    return result


def run_bench(argv: list[str], out: Path, pattern: str, timeout: float = 900) -> dict[str, Any]:
    """``python -m ARGV --out OUT`` as a user runs a benchmark (plugin off in the parent; the bench
    enables it per engine); the one result file matching ``pattern`` it wrote."""
    proc = subprocess.run(
        [sys.executable, "-m", *argv, "--out", str(out)],
        cwd=REPO,
        env=engine_env(False),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = list(out.glob(pattern))
    assert len(files) == 1, [f.name for f in files]
    result: dict[str, Any] = json.loads(files[0].read_text())
    return result


def run_offline(
    model: Path, *, enabled: bool, speculative_config: dict[str, Any] | None = None
) -> dict[str, Any]:
    request = {
        "model": str(model),
        "prompts": PROMPTS,
        "max_tokens": MAX_TOKENS,
        "speculative_config": speculative_config,
    }
    return run_module("tests.engine.offline_runner", request, enabled=enabled)


def once_per_run(
    tmp_path_factory: pytest.TempPathFactory, name: str, compute: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """``compute()``'s JSON result, computed once per test run: under pytest-xdist the first worker
    that needs it computes it under a lock, in the run's own temporary folder, and the others read
    it (or wait for it, which costs less than a second engine run). Nothing outlives the run."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's folder; each worker's own is popen-gwN inside it
    path = root / f"{name}.json"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            shared: dict[str, Any] = json.loads(path.read_text())
            return shared
        result = compute()
        partial = root / f"{name}.json.partial"
        partial.write_text(json.dumps(result))
        os.replace(partial, path)
        return result


@pytest.fixture(scope="session")
def vanilla(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Vanilla vLLM (plugin off) on PROMPTS: the reference of four files, one engine run per run."""
    return once_per_run(tmp_path_factory, "vanilla", lambda: run_offline(smollm2_dir, enabled=False))


@pytest.fixture(scope="session")
def enabled_defaults(smollm2_dir: Path) -> dict[str, Any]:
    return run_offline(smollm2_dir, enabled=True)


def run_parallel(model: Path, ranks: int = 1, **request: Any) -> dict[str, Any]:
    """``tests.engine.parallel_runner`` on PARALLEL_PROMPTS (greedy, top-1 log-probabilities) with
    ``request``'s layout and engine arguments; ``ranks``: the processes the layout starts."""
    body = {"model": str(model), "prompts": PARALLEL_PROMPTS, "max_tokens": PARALLEL_MAX_TOKENS, **request}
    # vLLM's automatic CPU binding refuses more ranks than NUMA nodes: one core group per rank
    binding = cpu_thread_binding(ranks, sorted(os.sched_getaffinity(0)))
    return run_module(
        "tests.engine.parallel_runner", body, enabled=True, timeout=900, VLLM_CPU_OMP_THREADS_BIND=binding
    )


@pytest.fixture(scope="session")
def smollm2_parallel(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The real SmolLM2's answers to PARALLEL_PROMPTS on one rank with the runner's default settings
    (plugin on, nothing else): the reference of the Shift padding and SwiftKV L_kv = layers tests,
    computed once per run."""
    return once_per_run(tmp_path_factory, "smollm2-parallel", lambda: run_parallel(smollm2_dir))
