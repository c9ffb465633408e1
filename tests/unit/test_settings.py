"""Runtime settings from the environment and from vLLM's additional_config."""

from __future__ import annotations

from pathlib import Path

import pytest

from arctic_runtime.settings import (
    AdminTokenError,
    RuntimeConfig,
    admin_token,
    parse_runtime_config,
    plugin_enabled,
)
from arctic_runtime.speculation import InvalidSetting, SpeculationCap


@pytest.mark.parametrize(
    ("value", "enabled"),
    [("1", True), ("true", True), ("ON", True), ("0", False), ("", False), ("no", False)],
)
def test_plugin_enabled(value: str, enabled: bool) -> None:
    assert plugin_enabled({"ARCTIC_SERVE_ENABLED": value}) is enabled


def test_plugin_disabled_by_default() -> None:
    assert plugin_enabled({}) is False


def test_plugin_enabled_rejects_typos() -> None:
    with pytest.raises(InvalidSetting, match="ARCTIC_SERVE_ENABLED"):
        plugin_enabled({"ARCTIC_SERVE_ENABLED": "ture"})


def test_admin_token_sources(tmp_path: Path) -> None:
    assert admin_token({}) is None
    assert admin_token({"ARCTIC_SERVE_ADMIN_TOKEN": " s3cret "}) == "s3cret"
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    assert admin_token({"ARCTIC_SERVE_ADMIN_TOKEN_FILE": str(token_file)}) == "from-file"
    # the direct variable wins over the file
    assert (
        admin_token({"ARCTIC_SERVE_ADMIN_TOKEN": "direct", "ARCTIC_SERVE_ADMIN_TOKEN_FILE": str(token_file)})
        == "direct"
    )


def test_admin_token_file_problems_are_reported(tmp_path: Path) -> None:
    with pytest.raises(AdminTokenError, match="cannot read"):
        admin_token({"ARCTIC_SERVE_ADMIN_TOKEN_FILE": str(tmp_path / "missing")})
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(AdminTokenError, match="empty"):
        admin_token({"ARCTIC_SERVE_ADMIN_TOKEN_FILE": str(empty)})


def test_parse_runtime_config() -> None:
    assert parse_runtime_config(None) == RuntimeConfig()
    assert parse_runtime_config({"other_plugin": 1}) == RuntimeConfig()
    config = parse_runtime_config({"arctic": {"speculation": {"soft_cap": 2, "hard_cap": 6}}})
    assert config.speculation == SpeculationCap(2, 6)
    assert parse_runtime_config({"arctic": config.as_additional_config()}) == config


def test_parse_runtime_config_errors_name_the_path() -> None:
    with pytest.raises(InvalidSetting) as info:
        parse_runtime_config({"arctic": {"speculation": {"soft_cap": -1}}})
    assert info.value.errors[0].field == "additional_config.arctic.speculation.soft_cap"
    with pytest.raises(InvalidSetting, match=r"additional_config\.arctic\.spec: unknown section"):
        parse_runtime_config({"arctic": {"spec": {}}})
    with pytest.raises(InvalidSetting, match="must be an object"):
        parse_runtime_config({"arctic": 3})
