"""Every registered patch point exists in the installed vLLM with the signature we rely on.

When vLLM is upgraded, this is the test that says which patch point moved.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest

from arctic_runtime import patches
from tests.conftest import engine_env

pytestmark = pytest.mark.engine


@pytest.mark.parametrize("point", patches.PATCH_POINTS, ids=lambda p: p.target)
def test_target_exists_with_expected_signature(point: patches.PatchPoint) -> None:
    patches.check(point)


SCHEDULE = next(p for p in patches.PATCH_POINTS if p.target.endswith(":Scheduler.schedule"))


def test_registry_catches_a_changed_signature() -> None:
    point = SCHEDULE
    moved = replace(point, params=(*point.params, "new_arg"))
    with pytest.raises(patches.PatchError, match=r"Scheduler\.schedule: expected parameters"):
        patches.check(moved)


def test_registry_catches_a_missing_target() -> None:
    gone = replace(SCHEDULE, target="vllm.v1.core.sched.scheduler:Scheduler.schedule_v2")
    with pytest.raises(patches.PatchError, match="schedule_v2: not defined"):
        patches.check(gone)
    no_module = replace(SCHEDULE, target="vllm.v1.core.sched.nowhere:Scheduler.schedule")
    with pytest.raises(patches.PatchError, match="not importable"):
        patches.check(no_module)


def test_added_methods_do_not_shadow_vllm() -> None:
    for point in patches.PATCH_POINTS:
        if point.action == "add":
            assert point.attribute.startswith("arctic_"), point.target


APPLY_TWICE = """
import json
from vllm.v1.core.sched.scheduler import Scheduler
from arctic_runtime import patching, plugin
plugin.register()
first = patching.applied_targets()
wrapped = Scheduler.schedule
plugin.register()
assert Scheduler.schedule is wrapped, "second register() wrapped again"
assert Scheduler.schedule.__arctic_original__.__name__ == "schedule"
print(json.dumps(first))
"""


def test_register_applies_every_patch_exactly_once() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", APPLY_TWICE],
        env=engine_env(True),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(proc.stdout.strip().splitlines()[-1].strip('[]"').split('", "')) == sorted(
        p.target for p in patches.PATCH_POINTS
    )


def test_patches_command_checks_the_installed_vllm() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "arctic_runtime.cli", "patches", "--check"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count('"check": "ok"') == len(patches.PATCH_POINTS)
