"""Shared fixtures. Real-engine tests (marker ``engine``) need vLLM and the real SmolLM2 weights;
with ARCTIC_REQUIRE_ENGINE=1 (``make test``, CI) a skipped engine test fails the run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from arctic_runtime.launcher import find_iomp

_skipped_engine_tests: list[str] = []


def worker_cpus(worker: str, workers: int, cpus: list[int]) -> list[int]:
    """The CPUs of pytest-xdist worker ``gwN`` out of ``workers``: contiguous, disjoint shares (the
    last takes the remainder); every CPU for each worker when there are fewer CPUs than workers."""
    index = int(worker.removeprefix("gw"))
    if len(cpus) < workers:
        return cpus
    size = len(cpus) // workers
    return cpus[index * size : (index + 1) * size if index < workers - 1 else len(cpus)]


def pytest_configure(config: pytest.Config) -> None:
    # Under pytest-xdist (`make test` runs two workers) each worker, and every engine it starts,
    # keeps to its own CPUs: two vLLM CPU engines whose OpenMP threads share cores slow each other
    # down far more than the parallel run gains (measured on 2 cores: 365 s together against 393 s
    # one after the other, unpinned).
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if worker and workers > 1:
        os.sched_setaffinity(0, worker_cpus(worker, workers, sorted(os.sched_getaffinity(0))))
    # pytest-xdist hands out files in collection order, longest first (the order
    # pytest_collection_modifyitems below sets), not by its default of "most tests first", which put
    # the slowest engine files, having one or two tests each, at the very end of the run
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


#: Seconds each slow real-engine file takes on one core of the CI machine (its log, 2026-12-03),
#: without the session fixtures several files share (vanilla, the one-rank parallel reference).
#: Under pytest-xdist (``make test``: ``--dist loadfile``) files are handed out longest first.
SLOW_FILES: dict[str, float] = {
    "tests/engine/test_swiftkv.py": 675,  # torch.compile on one core, suffix decoding, L_kv = layers
    "tests/engine/test_shift_parallel.py": 617,  # four two-rank layouts
    "tests/engine/test_bench_smoke.py": 300,
    "tests/engine/test_live_cap_server.py": 250,
    "tests/engine/test_heads_engine.py": 240,
    "tests/engine/test_shift_server.py": 200,
    "tests/engine/test_control_validate.py": 176,
    "tests/engine/test_suffix_engine.py": 142,
    "tests/engine/test_cap_control_server.py": 136,
    "tests/engine/test_prefill_drafts_engine.py": 100,
    "tests/engine/test_offline_engine.py": 91,
}
#: A real-engine file the table does not know yet (about one engine start).
DEFAULT_ENGINE_FILE_S = 60.0


def file_seconds(path: str, engine: bool) -> float:
    """Expected seconds of a test file (pure): the table's, else an engine start for real-engine
    files, else 0 (the fast tests, which fill the end of the run)."""
    return SLOW_FILES.get(path, DEFAULT_ENGINE_FILE_S if engine else 0.0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Under pytest-xdist the slowest files are handed out first and the short ones fill the tail
    # (longest-processing-time-first), so that the two workers finish within a short file of each
    # other instead of one running the last engine files alone.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: -file_seconds(item.nodeid.split("::", 1)[0], "engine" in item.keywords))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and "engine" in report.keywords:
        _skipped_engine_tests.append(report.nodeid)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("ARCTIC_REQUIRE_ENGINE") == "1" and _skipped_engine_tests:
        names = "\n  ".join(_skipped_engine_tests)
        print(
            f"\nFAILED: {len(_skipped_engine_tests)} real-engine test(s) were skipped; with "
            f"ARCTIC_REQUIRE_ENGINE=1 a skip is a failure:\n  {names}",
            file=sys.stderr,
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The real SmolLM2-135M-Instruct, converted once into the shared cache (~35 s the first time)."""
    from arctic_runtime.models import ensure_smollm2

    return ensure_smollm2()


def engine_env(enabled: bool, **extra: str) -> dict[str, str]:
    """Environment for a vLLM process on this CPU machine, plugin on or off."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARCTIC_SERVE_", "VLLM_PLUGINS"))}
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    iomp = find_iomp()
    if iomp:
        env["LD_PRELOAD"] = iomp
    if enabled:
        env["ARCTIC_SERVE_ENABLED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env
