"""Hypothesis example counts for the control policies' property tests, scaled by
``ARCTIC_HYPOTHESIS_SCALE`` (default 1; `make mutation` runs them at 0.1 to try many mutants)."""

from __future__ import annotations

import os


def examples(n: int) -> int:
    return max(5, round(n * float(os.environ.get("ARCTIC_HYPOTHESIS_SCALE", "1"))))
