"""The plugin inside a real vLLM engine (offline ``LLM``), with the real SmolLM2 weights.

Vanilla vLLM (plugin installed, not enabled) and vLLM with the plugin enabled at defaults must give
the same greedy tokens; the enabled plugin must be active in all three processes (front end, engine
core, worker); the disabled one must leave vLLM untouched.
"""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.engine


def test_real_model_answers_sensibly(vanilla: dict[str, Any]) -> None:
    assert "Paris" in vanilla["texts"][0]


def test_installed_but_disabled_plugin_changes_nothing(vanilla: dict[str, Any]) -> None:
    assert vanilla["front_end"]["patches"] == []
    assert vanilla["front_end"]["schedule_patched"] is False
    # The workers do not know our RPC: nothing was installed in the engine processes either.
    assert "arctic_get_state" in vanilla["engine_error"]


def test_enabled_plugin_is_active_in_every_process(enabled_defaults: dict[str, Any]) -> None:
    from arctic_runtime.patches import PATCH_POINTS

    every_target = sorted(p.target for p in PATCH_POINTS)
    front = enabled_defaults["front_end"]
    core = enabled_defaults["engine"]["engine_core"]
    workers = enabled_defaults["engine"]["workers"]
    assert sorted(front["patches"]) == every_target
    assert sorted(core["patches"]) == every_target
    assert len(workers) == 1 and sorted(workers[0]["patches"]) == every_target
    pids = {front["pid"], core["pid"], workers[0]["pid"]}
    assert len(pids) == 3, f"expected front end, engine core and worker in 3 processes, got {pids}"


def test_enabled_plugin_at_defaults_keeps_greedy_outputs(
    vanilla: dict[str, Any], enabled_defaults: dict[str, Any]
) -> None:
    assert enabled_defaults["token_ids"] == vanilla["token_ids"]
    spec = enabled_defaults["engine"]["speculation"]
    assert spec["method"] is None and spec["soft_cap"] is None and spec["hard_cap"] is None
