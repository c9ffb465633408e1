"""On a vLLM other than 0.26.x the enabled plugin stops with one line; the disabled one is inert."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import engine_env

pytestmark = pytest.mark.engine

# vLLM's own plugin loader, as every vLLM process runs it, with vLLM pretending to be 0.27.0.
LOAD_PLUGINS_ON_OTHER_VLLM = """
import vllm
vllm.__version__ = "0.27.0"
from vllm.plugins import load_general_plugins
load_general_plugins()
from vllm.v1.core.sched.scheduler import Scheduler
print("LOADED", hasattr(Scheduler.schedule, "__arctic_patch__"))
"""


def run(enabled: bool) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", LOAD_PLUGINS_ON_OTHER_VLLM],
        env=engine_env(enabled),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_enabled_on_other_vllm_fails_fast_with_both_versions() -> None:
    proc = run(enabled=True)
    assert proc.returncode == 1
    assert "LOADED" not in proc.stdout
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("arctic-serve 0.1.0 supports vLLM 0.26.x only, but vLLM 0.27.0 is installed")


def test_disabled_on_other_vllm_changes_nothing() -> None:
    proc = run(enabled=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "LOADED False" in proc.stdout


def test_launcher_refuses_other_vllm_in_one_line() -> None:
    script = (
        "import sys, vllm; vllm.__version__ = '0.25.1'\n"
        "from arctic_runtime.cli import main; sys.exit(main(['serve', '--port', '0']))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=engine_env(False),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "arctic-serve: error: arctic-serve 0.1.0 supports vLLM 0.26.x only, but vLLM 0.25.1 is installed"
        )
    )
