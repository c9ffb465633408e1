"""The kind suite (`make e2e`): on a machine without Docker or kind, one clear line, exit 0, nothing
built; its cap-controller check (e2e/caps_followed.py) reads the status the operator writes."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from arctic_operator.api import (
    ArcticInferenceServiceStatus,
    CapChangeRecord,
    CapControllerStatus,
    PodControlStatus,
)

REPO = Path(__file__).resolve().parents[2]


def test_e2e_skips_in_one_line_without_docker_or_kind(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"  # a PATH with bash's basics but neither docker nor kind
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "cat"):
        (bin_dir / tool).symlink_to(f"/bin/{tool}" if Path(f"/bin/{tool}").exists() else f"/usr/bin/{tool}")
    proc = subprocess.run(
        ["/bin/bash", "e2e/run.sh"],
        cwd=REPO,
        env={"PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "e2e: skipped: docker not found (needs Docker and kind)\n"


def resource_status(
    *, result: str = "Ok", effective: tuple[int, int] | None = (2, 3), cap_error: str | None = None
) -> dict[str, Any]:
    """An ArcticInferenceService whose status the operator's own models build: one pod whose caps
    the controller set to (2, 3), the engine reporting ``effective``."""
    change = CapChangeRecord(
        time=datetime(2026, 12, 3, tzinfo=UTC),
        pod="p-0",
        soft_cap=2,
        hard_cap=3,
        reason="Initial",
        result=result,
    )
    pod = PodControlStatus(
        name="p-0",
        ready=True,
        metrics="Ok",
        configured_soft_cap=2,
        configured_hard_cap=3,
        effective_soft_cap=None if effective is None else effective[0],
        effective_hard_cap=None if effective is None else effective[1],
        cap_error=cap_error,
    )
    status = ArcticInferenceServiceStatus(
        cap_controller=CapControllerStatus(last_changes=[change]), pods=[pod]
    )
    return {"kind": "ArcticInferenceService", "status": status.dump()}


@pytest.mark.parametrize(
    ("resource", "followed"),
    [
        (resource_status(), True),
        (resource_status(effective=(4, 16)), False),  # the engine still runs the spec's caps
        (resource_status(effective=None), False),  # the engine reports no cap
        (resource_status(result="HTTP 503: admin token unreadable"), False),
        (resource_status(cap_error="HTTP 503"), False),
        ({"kind": "ArcticInferenceService", "status": {}}, False),  # the controller set nothing yet
    ],
)
def test_the_kind_suites_cap_check_reads_the_operators_status(
    resource: dict[str, Any], followed: bool
) -> None:
    proc = subprocess.run(
        [sys.executable, "e2e/caps_followed.py"],
        cwd=REPO,
        input=json.dumps(resource),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == (0 if followed else 1), proc.stderr
    assert json.loads(proc.stdout)["pods"] == resource["status"].get("pods", [])
