"""How `make test` spreads the tests over its pytest-xdist workers: the slowest files first, and
the engine runs several files compare against made once per run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DEFAULT_ENGINE_FILE_S, SLOW_FILES, file_seconds
from tests.engine.conftest import once_per_run


def test_known_slow_files_first_then_other_engine_files_then_the_fast_tests() -> None:
    assert (
        file_seconds("tests/engine/test_swiftkv.py", engine=True)
        == SLOW_FILES["tests/engine/test_swiftkv.py"]
    )
    assert file_seconds("tests/engine/test_models.py", engine=True) == DEFAULT_ENGINE_FILE_S
    assert file_seconds("tests/unit/test_worker_cpus.py", engine=False) == 0.0
    # the longest file holds the one-core torch.compile run of SwiftKV, which must start first
    assert max(SLOW_FILES, key=SLOW_FILES.__getitem__) == "tests/engine/test_swiftkv.py"
    assert min(SLOW_FILES.values()) > 0


class Workers:
    """A stand-in for pytest's TempPathFactory of one pytest-xdist worker of a run."""

    def __init__(self, run: Path, worker: str) -> None:
        self.folder = run / f"popen-{worker}"
        self.folder.mkdir(parents=True, exist_ok=True)

    def getbasetemp(self) -> Path:
        return self.folder


def test_a_result_shared_by_workers_is_computed_once_per_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def compute(worker: str) -> dict[str, Any]:
        calls.append(worker)
        return {"token_ids": [[1, 2, 3]], "logprobs": [[-0.1234567890123, -2.5]], "by": worker}

    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    first = once_per_run(Workers(tmp_path / "run1", "gw0"), "vanilla", lambda: compute("gw0"))  # type: ignore[arg-type]
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    second = once_per_run(Workers(tmp_path / "run1", "gw1"), "vanilla", lambda: compute("gw1"))  # type: ignore[arg-type]
    assert calls == ["gw0"] and second == first  # floats come back exactly
    # another run (another base folder) computes it afresh: nothing is reused across runs
    third = once_per_run(Workers(tmp_path / "run2", "gw1"), "vanilla", lambda: compute("gw1"))  # type: ignore[arg-type]
    assert calls == ["gw0", "gw1"] and third["by"] == "gw1"


def test_a_failed_computation_leaves_nothing_for_the_other_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")

    def fail() -> dict[str, Any]:
        raise AssertionError("engine failed")

    with pytest.raises(AssertionError, match="engine failed"):
        once_per_run(Workers(tmp_path, "gw0"), "vanilla", fail)  # type: ignore[arg-type]
    again = once_per_run(Workers(tmp_path, "gw1"), "vanilla", lambda: {"ok": True})  # type: ignore[arg-type]
    assert again == {"ok": True}
