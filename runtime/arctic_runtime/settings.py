"""Runtime settings: where each comes from, its default and why. Pure code, no vLLM import.

Two sources, on purpose:

* **Environment** for what must be known before vLLM parses its arguments, or must stay out of
  vLLM's config (which is hashed, logged and shipped to every process): whether the plugin is
  enabled, the admin token and the admin API's port.
* **``additional_config["arctic"]``** (vLLM's own free-form config dict) for engine settings such as
  the speculation cap and the parallel layout. vLLM ships it to the EngineCore and every worker, so
  all processes start from the same values without any shared state. Its shape and parser are part
  of the runtime/operator contract: ``arctic_runtime.contract.EngineSettings``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from arctic_runtime.contract import (
    ARCTIC_ADMIN_PORT,
    ENV_ADMIN_PORT,
    ENV_ADMIN_TOKEN,
    ENV_ADMIN_TOKEN_FILE,
    ENV_ENABLED,
    FieldError,
    InvalidSetting,
)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def plugin_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the plugin should patch vLLM in this process. A typo is an error, not "off"."""
    raw = (environ if environ is not None else os.environ).get(ENV_ENABLED, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise InvalidSetting(
        [FieldError(ENV_ENABLED, f"must be one of 1/true/yes/on or 0/false/no/off, got {raw!r}")]
    )


class AdminTokenError(RuntimeError):
    """The admin token is configured but cannot be read."""


def admin_token(environ: Mapping[str, str] | None = None) -> str | None:
    """The admin API token, or None when the admin API is off (no token configured)."""
    env = environ if environ is not None else os.environ
    direct = env.get(ENV_ADMIN_TOKEN, "").strip()
    if direct:
        return direct
    path = env.get(ENV_ADMIN_TOKEN_FILE, "").strip()
    if not path:
        return None
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise AdminTokenError(
            f"{ENV_ADMIN_TOKEN_FILE}={path}: cannot read the token file ({exc.strerror})"
        ) from exc
    if not token:
        raise AdminTokenError(f"{ENV_ADMIN_TOKEN_FILE}={path}: the token file is empty")
    return token


def admin_port(environ: Mapping[str, str] | None = None) -> int:
    """The admin API's TCP port: ``ARCTIC_SERVE_ADMIN_PORT``, else ``ARCTIC_ADMIN_PORT`` (8001)."""
    raw = (environ if environ is not None else os.environ).get(ENV_ADMIN_PORT, "").strip()
    if not raw:
        return ARCTIC_ADMIN_PORT
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise InvalidSetting([FieldError(ENV_ADMIN_PORT, f"must be a port number 1..65535, got {raw!r}")])
    return int(raw)
