"""Runtime settings: where each comes from, its default and why. Pure code, no vLLM import.

Two sources, on purpose:

* **Environment** for what must be known before vLLM parses its arguments, or must stay out of
  vLLM's config (which is hashed, logged and shipped to every process): whether the plugin is
  enabled, and the admin token.
* **``additional_config["arctic"]``** (vLLM's own free-form config dict) for engine settings such as
  the speculation cap. vLLM ships it to the EngineCore and every worker, so all processes start from
  the same values without any shared state.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arctic_runtime.speculation import FieldError, InvalidSetting, SpeculationCap, parse_cap

#: Set to 1/true/yes/on to enable the plugin. Unset (the default), the installed plugin is inert:
#: vLLM behaves exactly as without it. (Arctic Inference uses the same opt-in model.)
ENV_ENABLED = "ARCTIC_SERVE_ENABLED"
#: The admin API's bearer token, given directly ...
ENV_ADMIN_TOKEN = "ARCTIC_SERVE_ADMIN_TOKEN"
#: ... or as a file path (a mounted Kubernetes Secret). The file is re-read on every request, so a
#: rotated Secret takes effect without a restart.
ENV_ADMIN_TOKEN_FILE = "ARCTIC_SERVE_ADMIN_TOKEN_FILE"
#: The key of our section in vLLM's ``additional_config``.
ADDITIONAL_CONFIG_KEY = "arctic"

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


@dataclass(frozen=True)
class RuntimeConfig:
    """Our engine settings, as carried in ``additional_config["arctic"]``."""

    speculation: SpeculationCap = field(default_factory=SpeculationCap)

    def as_additional_config(self) -> dict[str, Any]:
        return {"speculation": self.speculation.as_dict()}


_SECTIONS = ("speculation",)


def parse_runtime_config(additional_config: Mapping[str, Any] | None) -> RuntimeConfig:
    """Read and validate our section of vLLM's ``additional_config`` (absent = defaults)."""
    section = (additional_config or {}).get(ADDITIONAL_CONFIG_KEY)
    if section is None:
        return RuntimeConfig()
    prefix = f"additional_config.{ADDITIONAL_CONFIG_KEY}"
    if not isinstance(section, Mapping):
        raise InvalidSetting([FieldError(prefix, "must be an object")])
    errors = [
        FieldError(f"{prefix}.{key}", f"unknown section; allowed: {', '.join(_SECTIONS)}")
        for key in section
        if key not in _SECTIONS
    ]
    if errors:
        raise InvalidSetting(errors)
    spec = section.get("speculation") or {}
    return RuntimeConfig(speculation=parse_cap(spec, prefix=f"{prefix}.speculation."))
