"""Runtime settings from the environment (additional_config: tests/unit/test_contract.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from arctic_runtime.contract import InvalidSetting
from arctic_runtime.settings import AdminTokenError, admin_token, plugin_enabled


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
