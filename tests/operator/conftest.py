"""Fixtures for the operator's API tests: the committed CRD, its schema and a CEL evaluator."""

from __future__ import annotations

from typing import Any

import pytest

from tests.operator.apiserver_rules import CelRules, load_crd, openapi


@pytest.fixture(scope="session")
def crd() -> dict[str, Any]:
    """The committed CRD file (a freshness test checks it is what the models generate)."""
    return load_crd()


@pytest.fixture(scope="session")
def schema(crd: dict[str, Any]) -> dict[str, Any]:
    return openapi(crd)


@pytest.fixture(scope="session")
def cel() -> CelRules:
    return CelRules()
