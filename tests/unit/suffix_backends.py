"""The cache backends the suffix tests run against: every cache-level test runs on both.

The native backend's tests are skipped when the extension is not built, except with
ARCTIC_REQUIRE_ENGINE=1 (``make test``, CI): then they run, and fail, so a missing build is never
silently skipped.
"""

from __future__ import annotations

import os

import pytest

from arctic_runtime.suffix.tree import native_available

NATIVE_REQUIRED = os.environ.get("ARCTIC_REQUIRE_ENGINE") == "1"
NATIVE_MISSING = "arctic_runtime.suffix._native is not built (pip install -e . with a C++17 compiler)"

native_param = pytest.param(
    "native", marks=pytest.mark.skipif(not native_available() and not NATIVE_REQUIRED, reason=NATIVE_MISSING)
)
BACKENDS = ["python", native_param]
