"""`make e2e` on a machine without Docker or kind: one clear line, exit 0, nothing built."""

from __future__ import annotations

import subprocess
from pathlib import Path

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
