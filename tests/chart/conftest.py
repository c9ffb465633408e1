"""Fixtures for the chart tests: the real helm binaries, a renderable copy of the chart, and each value
scenario rendered once per session (helm template takes well under a second; the tests only read).

Missing tools are installed with the same code as `make tools`. If that fails, the tests are skipped
with the reason, except under ARCTIC_REQUIRE_ENGINE=1 (`make test`, CI), where they fail.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.chart import chartkit


@pytest.fixture(scope="session")
def tools() -> None:
    if chartkit.missing_tools():
        proc = chartkit.install_tools()
        missing = chartkit.missing_tools()
        if missing:
            reason = (
                f"the real chart tools are missing ({', '.join(str(p) for p in missing)}) and "
                f"`python tools/install_tools.py` failed ({proc.returncode}):\n{proc.stderr[-2000:]}"
            )
            if os.environ.get("ARCTIC_REQUIRE_ENGINE") == "1":
                pytest.fail(reason + "\n(ARCTIC_REQUIRE_ENGINE=1: chart tests never skip; run `make tools`)")
            pytest.skip(reason)


@pytest.fixture(scope="session")
def chart(tools: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of charts/arctic-serve with a CRD to render (the placeholder until crds/ has one)."""
    path, _ = chartkit.prepare_chart(tmp_path_factory.mktemp("chart"))
    return path


@pytest.fixture(scope="session")
def crd_sources(chart: Path) -> list[Path]:
    """The CRD files the chart copy renders: the chart's files/crds, or the placeholder."""
    return sorted((chart / "files" / "crds").glob("*.yaml"))


@pytest.fixture(scope="session")
def rendered(chart: Path) -> dict[str, list[dict[str, Any]]]:
    """scenario name -> the manifests `helm template` renders for it (chartkit.SCENARIOS)."""
    return {
        name: chartkit.documents(chartkit.template(chart, sets)) for name, sets in chartkit.SCENARIOS.items()
    }
